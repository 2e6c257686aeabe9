package main

import "testing"

// An ICMP message with a correct checksum sums to 0xffff in one's complement.
func TestEchoRequestChecksum(t *testing.T) {
	b := echoRequest(0x1234, 7)
	var sum uint32
	for i := 0; i < len(b); i += 2 {
		sum += uint32(b[i])<<8 | uint32(b[i+1])
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	if sum != 0xffff || b[0] != 8 {
		t.Fatalf("type %d, one's complement sum %#x; want 8 and 0xffff", b[0], sum)
	}
}
