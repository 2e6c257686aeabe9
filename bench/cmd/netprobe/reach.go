package main

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"time"
)

// reachResult is what reach prints: when the first echo reply came, as Unix nanoseconds, so
// the caller can subtract the moment it started the target container (same machine clock).
type reachResult struct {
	FirstReplyUnixNano int64 `json:"first_reply_unix_nano"`
	Probes             int   `json:"probes"`
}

// reach sends an ICMP echo request every interval to target and exits at the first reply.
// A new request does not wait for the previous one's timeout, so the answer is precise to
// the interval rather than to a ping timeout.
func reach(args []string) error {
	fs := flag.NewFlagSet("reach", flag.ContinueOnError)
	target := fs.String("target", "", "IPv4 address to probe")
	interval := fs.Duration("interval", 10*time.Millisecond, "time between echo requests")
	timeout := fs.Duration("timeout", 30*time.Second, "give up after this long")
	if err := fs.Parse(args); err != nil {
		return err
	}
	dst := net.ParseIP(*target).To4()
	if dst == nil {
		return fmt.Errorf("reach: -target %q is not an IPv4 address", *target)
	}
	conn, err := net.ListenPacket("ip4:icmp", "0.0.0.0")
	if err != nil {
		return fmt.Errorf("opening a raw ICMP socket (needs root): %w", err)
	}
	defer conn.Close()
	id := uint16(os.Getpid())
	replies := make(chan time.Time, 1)
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := conn.ReadFrom(buf)
			if err != nil {
				return
			}
			at := time.Now()
			// A raw IPv4 ICMP socket delivers the ICMP message without the IP header.
			if n >= 8 && buf[0] == 0 && binary.BigEndian.Uint16(buf[4:]) == id &&
				from.(*net.IPAddr).IP.Equal(dst) {
				replies <- at
				return
			}
		}
	}()
	deadline := time.After(*timeout)
	tick := time.NewTicker(*interval)
	defer tick.Stop()
	addr := &net.IPAddr{IP: dst}
	for seq := 1; ; seq++ {
		// Send errors (no route yet, neighbour not resolved) are the state being measured.
		_, _ = conn.WriteTo(echoRequest(id, uint16(seq)), addr)
		select {
		case at := <-replies:
			return json.NewEncoder(os.Stdout).Encode(reachResult{FirstReplyUnixNano: at.UnixNano(), Probes: seq})
		case <-deadline:
			return errors.New("reach: no reply before the timeout")
		case <-tick.C:
		}
	}
}

// echoRequest builds an ICMP echo request with an 8-byte payload.
func echoRequest(id, seq uint16) []byte {
	b := make([]byte, 16)
	b[0] = 8 // echo request
	binary.BigEndian.PutUint16(b[4:], id)
	binary.BigEndian.PutUint16(b[6:], seq)
	copy(b[8:], "meshnet!")
	var sum uint32
	for i := 0; i < len(b); i += 2 {
		sum += uint32(b[i])<<8 | uint32(b[i+1])
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	binary.BigEndian.PutUint16(b[2:], ^uint16(sum))
	return b
}
