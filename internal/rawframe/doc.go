// Package rawframe builds, sends, captures and reads raw Ethernet frames on
// an AF_PACKET socket: what a hostile container with CAP_NET_RAW (Docker's
// default) can do on its interface. It exists for tests: the dataplane's
// kernel tests and the e2e suite's l2probe helper forge frames with another
// container's MAC and address and sniff for traffic that is not theirs.
// Nothing in meshnet's daemons uses it.
//
// Only what those tests need is here: IPv4 ICMP echo and ARP frames, and a
// parser that names the addresses a frame carries.
package rawframe
