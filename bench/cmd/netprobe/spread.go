package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"strings"
	"time"
)

// whoserve answers every connection with its name and a newline, then
// closes it: a replica a client can tell from the others.
func whoserve(args []string) error {
	fs := flag.NewFlagSet("whoserve", flag.ContinueOnError)
	addr := fs.String("addr", ":7101", "TCP address to listen on")
	name := fs.String("name", "", "what to answer")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *name == "" {
		return errors.New("whoserve: -name is required")
	}
	return listenAndServe(*addr, func(c net.Conn) { fmt.Fprintln(c, *name) })
}

// spreadResult is what spread prints: connections per answering server,
// the failed ones, and when each server last answered (Unix nanoseconds,
// the machine's clock: the caller compares it with when it stopped one).
type spreadResult struct {
	Counts       map[string]int   `json:"counts"`
	Failed       int              `json:"failed"`
	LastUnixNano map[string]int64 `json:"last_unix_nano"`
	Seconds      float64          `json:"seconds"`
}

// spread opens a connection every interval (one at a time) for duration to
// whoserve servers behind addr (a VIP) and tallies who answered.
func spread(args []string) error {
	fs := flag.NewFlagSet("spread", flag.ContinueOnError)
	addr := fs.String("addr", "", "host:port of the servers (a VIP)")
	duration := fs.Duration("duration", 5*time.Second, "how long")
	interval := fs.Duration("interval", 0, "pause between connections (0: none)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *addr == "" {
		return errors.New("spread: -addr is required")
	}
	r := spreadResult{Counts: map[string]int{}, LastUnixNano: map[string]int64{}}
	start := time.Now()
	for end := start.Add(*duration); time.Now().Before(end); {
		name, err := askName(*addr)
		if err != nil {
			r.Failed++
		} else {
			r.Counts[name]++
			r.LastUnixNano[name] = time.Now().UnixNano()
		}
		if *interval > 0 {
			time.Sleep(*interval)
		}
	}
	r.Seconds = time.Since(start).Seconds()
	return json.NewEncoder(os.Stdout).Encode(r)
}

func askName(addr string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(line), nil
}
