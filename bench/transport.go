package bench

import (
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

// countingTransport is memberlist's own UDP/TCP transport with a count of the bytes the node
// sends: packets (probes, gossip) and stream writes (push/pull, joins) in both directions of
// a stream it opened or accepted. What a node sends is what the others receive, so bytes sent
// per node per second is the control plane's cost on the wire.
type countingTransport struct {
	*memberlist.NetTransport
	port    int
	sent    *atomic.Int64
	streams chan net.Conn
	done    chan struct{}
	wg      sync.WaitGroup
}

var _ memberlist.NodeAwareTransport = (*countingTransport)(nil)

func newCountingTransport(addr string, sent *atomic.Int64) (*countingTransport, error) {
	nt, err := memberlist.NewNetTransport(&memberlist.NetTransportConfig{BindAddrs: []string{addr}, BindPort: 0})
	if err != nil {
		return nil, err
	}
	t := &countingTransport{NetTransport: nt, port: nt.GetAutoBindPort(), sent: sent,
		streams: make(chan net.Conn), done: make(chan struct{})}
	// Accepted streams are wrapped on their way to memberlist, so its replies count too.
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		for {
			select {
			case c := <-nt.StreamCh():
				select {
				case t.streams <- &countingConn{Conn: c, sent: sent}:
				case <-t.done:
					c.Close()
					return
				}
			case <-t.done:
				return
			}
		}
	}()
	return t, nil
}

func (t *countingTransport) StreamCh() <-chan net.Conn { return t.streams }

func (t *countingTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	t.sent.Add(int64(len(b)))
	return t.NetTransport.WriteTo(b, addr)
}

func (t *countingTransport) WriteToAddress(b []byte, addr memberlist.Address) (time.Time, error) {
	t.sent.Add(int64(len(b)))
	return t.NetTransport.WriteToAddress(b, addr)
}

func (t *countingTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	c, err := t.NetTransport.DialTimeout(addr, timeout)
	if err != nil {
		return nil, err
	}
	return &countingConn{Conn: c, sent: t.sent}, nil
}

func (t *countingTransport) DialAddressTimeout(addr memberlist.Address, timeout time.Duration) (net.Conn, error) {
	c, err := t.NetTransport.DialAddressTimeout(addr, timeout)
	if err != nil {
		return nil, err
	}
	return &countingConn{Conn: c, sent: t.sent}, nil
}

// Shutdown stops the inner transport first: its listener may be blocked handing a stream to
// the forwarding goroutine, which keeps draining until done is closed.
func (t *countingTransport) Shutdown() error {
	err := t.NetTransport.Shutdown()
	close(t.done)
	t.wg.Wait()
	return err
}

type countingConn struct {
	net.Conn
	sent *atomic.Int64
}

func (c *countingConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	c.sent.Add(int64(n))
	return n, err
}
