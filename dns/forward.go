package dns

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
)

// exchanger answers a query the table does not: the host's resolvers
// (forwarder), or whatever Config.Forward says.
type exchanger interface {
	exchange(ctx context.Context, r *dns.Msg, tcp bool) (*dns.Msg, error)
}

type exchangeFunc func(ctx context.Context, r *dns.Msg, tcp bool) (*dns.Msg, error)

func (f exchangeFunc) exchange(ctx context.Context, r *dns.Msg, tcp bool) (*dns.Msg, error) {
	return f(ctx, r, tcp)
}

// forwarder sends queries for names outside the zone to the host's
// resolvers. It tries them in turn, each for a short time, starting with
// the one that answered last: a dead first resolver costs one timeout,
// once, not one per query.
type forwarder struct {
	upstreams []string // "IP:port"
	timeout   time.Duration
	log       *slog.Logger
	udp, tcp  *dns.Client
	preferred atomic.Int32  // index of the upstream that answered last
	failing   []atomic.Bool // per upstream: last attempt failed (logged on change only)
}

func newForwarder(upstreams []string, timeout time.Duration, log *slog.Logger) *forwarder {
	if len(upstreams) == 0 {
		return nil
	}
	return &forwarder{
		upstreams: upstreams,
		timeout:   timeout,
		log:       log,
		// UDPSize 0: the client's EDNS size travels in the forwarded query,
		// and miekg sizes its read buffer from it.
		udp:     &dns.Client{Net: "udp", Timeout: timeout},
		tcp:     &dns.Client{Net: "tcp", Timeout: timeout},
		failing: make([]atomic.Bool, len(upstreams)),
	}
}

// errUpstreamRcode marks an upstream that answered SERVFAIL or REFUSED:
// another may do better.
var errUpstreamRcode = errors.New("upstream answered with an error rcode")

// exchange forwards r over the transport the client used (so a truncated
// UDP answer is passed on and the client's TCP retry is forwarded over
// TCP). It returns the first good answer; else the last error answer
// received; else an error.
func (f *forwarder) exchange(ctx context.Context, r *dns.Msg, tcp bool) (*dns.Msg, error) {
	c := f.udp
	if tcp {
		c = f.tcp
	}
	// A fresh ID per hop: the client's ID is its own, and a random one
	// makes spoofed upstream answers harder to slip in.
	q := *r
	q.Id = dns.Id()

	n := len(f.upstreams)
	first := int(f.preferred.Load())
	var last *dns.Msg
	var errs []error
	for i := range n {
		idx := (first + i) % n
		up := f.upstreams[idx]
		resp, err := exchangeOne(ctx, c, &q, up, f.timeout)
		if err == nil && !sameQuestion(resp, r) {
			err = errors.New("answer is for another question")
		}
		if err == nil && (resp.Rcode == dns.RcodeServerFailure || resp.Rcode == dns.RcodeRefused) {
			last = resp
			err = fmt.Errorf("%w %s", errUpstreamRcode, dns.RcodeToString[resp.Rcode])
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", up, err))
			if !f.failing[idx].Swap(true) {
				f.log.Warn("dns upstream failing", "upstream", up, "err", err)
			}
			if ctx.Err() != nil {
				break
			}
			continue
		}
		if f.failing[idx].Swap(false) {
			f.log.Info("dns upstream answering again", "upstream", up)
		}
		f.preferred.Store(int32(idx))
		return resp, nil
	}
	if last != nil {
		return last, nil
	}
	return nil, fmt.Errorf("forward %s %s: %w", r.Question[0].Name,
		dns.TypeToString[r.Question[0].Qtype], errors.Join(errs...))
}

func sameQuestion(resp, req *dns.Msg) bool {
	if len(resp.Question) != 1 {
		// Some servers omit the question in error answers; accept those.
		return len(resp.Question) == 0 && resp.Rcode != dns.RcodeSuccess
	}
	a, b := resp.Question[0], req.Question[0]
	return a.Qtype == b.Qtype && a.Qclass == b.Qclass && strings.EqualFold(a.Name, b.Name)
}

// exchangeOne asks one upstream. miekg's client takes only the deadline
// from a context, so cancellation (server shutdown) closes the socket to
// end the wait.
func exchangeOne(ctx context.Context, c *dns.Client, q *dns.Msg, up string, timeout time.Duration) (*dns.Msg, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	conn, err := c.DialContext(ctx, up)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	resp, _, err := c.ExchangeWithConnContext(ctx, q, conn)
	if err != nil && ctx.Err() != nil {
		err = fmt.Errorf("%w (%w)", ctx.Err(), err)
	}
	return resp, err
}
