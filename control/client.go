package control

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"syscall"
	"time"
)

// DefaultSocket is where meshnetd serves the control API.
const DefaultSocket = "/run/meshnet/meshnet.sock"

// Client talks to one daemon's control socket.
type Client struct {
	socket string
	http   *http.Client
}

// NewClient returns a client for the socket at path.
func NewClient(path string) *Client {
	return &Client{
		socket: path,
		http: &http.Client{
			Timeout: 10 * time.Second,
			Transport: &http.Transport{
				DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
					var d net.Dialer
					return d.DialContext(ctx, "unix", path)
				},
			},
		},
	}
}

func (c *Client) Peers(ctx context.Context) ([]Peer, error) {
	var v []Peer
	return v, c.get(ctx, "/v1/peers", &v)
}

func (c *Client) Status(ctx context.Context) (Status, error) {
	var v Status
	return v, c.get(ctx, "/v1/status", &v)
}

func (c *Client) Networks(ctx context.Context) ([]Network, error) {
	var v []Network
	return v, c.get(ctx, "/v1/networks", &v)
}

func (c *Client) Endpoints(ctx context.Context) ([]Endpoint, error) {
	var v []Endpoint
	return v, c.get(ctx, "/v1/endpoints", &v)
}

func (c *Client) Services(ctx context.Context) ([]Service, error) {
	var v []Service
	return v, c.get(ctx, "/v1/services", &v)
}

func (c *Client) Version(ctx context.Context) (Version, error) {
	var v Version
	return v, c.get(ctx, "/v1/version", &v)
}

func (c *Client) Lookup(ctx context.Context, name, qtype string) (Lookup, error) {
	var v Lookup
	q := url.Values{"name": {name}}
	if qtype != "" {
		q.Set("type", qtype)
	}
	return v, c.get(ctx, "/v1/lookup?"+q.Encode(), &v)
}

// RemovePeer asks the daemon to remove node for good; force skips the
// check that no live node still sees it alive.
func (c *Client) RemovePeer(ctx context.Context, node string, force bool) error {
	body, _ := json.Marshal(RemovePeerRequest{Node: node, Force: force})
	return c.do(ctx, http.MethodPost, "/v1/rmpeer", bytes.NewReader(body), nil)
}

func (c *Client) get(ctx context.Context, path string, out any) error {
	return c.do(ctx, http.MethodGet, path, nil, out)
}

func (c *Client) do(ctx context.Context, method, path string, body io.Reader, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, "http://meshnetd"+path, body)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return c.explain(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("read reply from meshnetd: %w", err)
	}
	if resp.StatusCode/100 != 2 {
		var e Error
		if json.Unmarshal(data, &e) == nil && e.Error != "" {
			return errors.New(e.Error)
		}
		return fmt.Errorf("meshnetd answered %s", resp.Status)
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("decode reply from meshnetd: %w", err)
	}
	return nil
}

// explain turns a dial failure into what the operator should check.
func (c *Client) explain(err error) error {
	switch {
	case errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ENOENT):
		return fmt.Errorf("no meshnetd control socket at %s: is meshnetd running? (or pass --socket)", c.socket)
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("meshnetd is not answering on %s: is it running? (a stale socket from a stopped daemon refuses connections)", c.socket)
	case errors.Is(err, os.ErrPermission) || errors.Is(err, syscall.EACCES):
		return fmt.Errorf("permission denied on %s: the control socket is root-only; run meshctl as root", c.socket)
	}
	return fmt.Errorf("talk to meshnetd on %s: %w", c.socket, err)
}
