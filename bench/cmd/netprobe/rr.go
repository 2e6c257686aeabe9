package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"time"
)

// serve echoes every byte it reads, on every connection, until killed.
func serve(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	addr := fs.String("addr", ":7100", "TCP address to listen on")
	if err := fs.Parse(args); err != nil {
		return err
	}
	return listenAndServe(*addr, func(c net.Conn) {
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetNoDelay(true)
		}
		_, _ = io.Copy(c, c)
	})
}

// listenAndServe accepts connections on addr until killed, handling each
// in a goroutine of its own, and closes it after.
func listenAndServe(addr string, handle func(net.Conn)) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", addr, err)
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			return fmt.Errorf("accepting on %s: %w", addr, err)
		}
		go func() {
			defer c.Close()
			handle(c)
		}()
	}
}

// rrResult is what rr prints: one connection, one request outstanding at a time, as netperf's
// TCP_RR does.
type rrResult struct {
	Transactions int     `json:"transactions"`
	Seconds      float64 `json:"seconds"`
	PerSecond    float64 `json:"per_second"`
	MeanUS       float64 `json:"mean_us"`
	P50US        float64 `json:"p50_us"`
	P90US        float64 `json:"p90_us"`
	P99US        float64 `json:"p99_us"`
	MaxUS        float64 `json:"max_us"`
}

// rr sends a request of size bytes and waits for the whole echo, again and again, for
// duration, after a warm-up that is not counted (connection setup, ARP, slow start).
func rr(args []string) error {
	fs := flag.NewFlagSet("rr", flag.ContinueOnError)
	addr := fs.String("addr", "", "server host:port")
	duration := fs.Duration("duration", 5*time.Second, "how long to measure")
	warmup := fs.Duration("warmup", 500*time.Millisecond, "round trips before measuring, not counted")
	size := fs.Int("size", 1, "request and response size in bytes")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *addr == "" || *size < 1 {
		return errors.New("rr: -addr is required and -size must be at least 1")
	}
	c, err := net.DialTimeout("tcp", *addr, 5*time.Second)
	if err != nil {
		return fmt.Errorf("connecting to %s: %w", *addr, err)
	}
	defer c.Close()
	_ = c.(*net.TCPConn).SetNoDelay(true)
	req := make([]byte, *size)
	resp := make([]byte, *size)
	once := func() error {
		if _, err := c.Write(req); err != nil {
			return err
		}
		_, err := io.ReadFull(c, resp)
		return err
	}
	for end := time.Now().Add(*warmup); time.Now().Before(end); {
		if err := once(); err != nil {
			return fmt.Errorf("warm-up round trip to %s: %w", *addr, err)
		}
	}
	// Preallocated so the measurement does not include slice growth.
	lat := make([]time.Duration, 0, 1<<20)
	start := time.Now()
	end := start.Add(*duration)
	for {
		t0 := time.Now()
		if !t0.Before(end) {
			break
		}
		if err := once(); err != nil {
			return fmt.Errorf("round trip to %s: %w", *addr, err)
		}
		lat = append(lat, time.Since(t0))
	}
	took := time.Since(start)
	if len(lat) == 0 {
		return errors.New("rr: no round trip completed")
	}
	return json.NewEncoder(os.Stdout).Encode(summarize(lat, took))
}

// summarize turns latencies measured over took into the printed result.
func summarize(lat []time.Duration, took time.Duration) rrResult {
	slices.Sort(lat)
	var sum time.Duration
	for _, d := range lat {
		sum += d
	}
	us := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 }
	pct := func(p float64) float64 { return us(lat[min(len(lat)-1, int(p*float64(len(lat))))]) }
	return rrResult{
		Transactions: len(lat),
		Seconds:      took.Seconds(),
		PerSecond:    float64(len(lat)) / took.Seconds(),
		MeanUS:       us(sum) / float64(len(lat)),
		P50US:        pct(0.50),
		P90US:        pct(0.90),
		P99US:        pct(0.99),
		MaxUS:        us(lat[len(lat)-1]),
	}
}

// conn opens a new connection for every transaction: connect, a 1-byte
// request, its echo, close; one at a time, for duration. What a client
// without connection reuse costs (a VIP's DNAT is made per connection).
func conn(args []string) error {
	fs := flag.NewFlagSet("conn", flag.ContinueOnError)
	addr := fs.String("addr", "", "server host:port")
	duration := fs.Duration("duration", 5*time.Second, "how long to measure")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *addr == "" {
		return errors.New("conn: -addr is required")
	}
	once := func() error {
		c, err := net.DialTimeout("tcp", *addr, 5*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		// Linger 0: no TIME_WAIT pile-up of the client's ports over a run.
		_ = c.(*net.TCPConn).SetLinger(0)
		b := []byte{1}
		if _, err := c.Write(b); err != nil {
			return err
		}
		_, err = io.ReadFull(c, b)
		return err
	}
	if err := once(); err != nil { // warm-up: ARP, the first DNAT
		return fmt.Errorf("warm-up connection to %s: %w", *addr, err)
	}
	lat := make([]time.Duration, 0, 1<<18)
	start := time.Now()
	for end := start.Add(*duration); ; {
		t0 := time.Now()
		if !t0.Before(end) {
			break
		}
		if err := once(); err != nil {
			return fmt.Errorf("connection to %s: %w", *addr, err)
		}
		lat = append(lat, time.Since(t0))
	}
	return json.NewEncoder(os.Stdout).Encode(summarize(lat, time.Since(start)))
}
