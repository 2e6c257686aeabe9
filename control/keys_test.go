package control

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strings"
	"testing"
)

// keyFake is a backend with key rotation.
type keyFake struct {
	fakeBackend
	got []KeysRequest
}

func (f *keyFake) Keys(_ context.Context, req KeysRequest) (KeysReply, error) {
	f.got = append(f.got, req)
	if req.Key == "primary" {
		return KeysReply{}, UserError{errors.New("this key is the primary key")}
	}
	return KeysReply{Op: req.Op, Nodes: []KeyNode{{Node: "a", OK: true, Primary: "K"}, {Node: "b", Error: "not reached: the node is dead"}}}, nil
}

func TestKeysRoundTrip(t *testing.T) {
	f := &keyFake{}
	c := NewClient(serve(t, f))
	ctx := context.Background()
	res, err := c.Keys(ctx, "list", "")
	if err != nil || res.Op != "list" || len(res.Nodes) != 2 || res.Failed() != 1 {
		t.Fatalf("list: %+v %v", res, err)
	}
	if _, err := c.Keys(ctx, "install", "NEWKEY"); err != nil {
		t.Fatal(err)
	}
	if len(f.got) != 2 || f.got[1] != (KeysRequest{Op: "install", Key: "NEWKEY"}) {
		t.Fatalf("backend saw %+v", f.got)
	}
	if _, err := c.Keys(ctx, "remove", "primary"); err == nil || !strings.Contains(err.Error(), "primary key") {
		t.Fatalf("the backend's refusal must reach meshctl: %v", err)
	}
}

func TestKeysMalformedAndUnsupported(t *testing.T) {
	f := &keyFake{}
	sock := serve(t, f)
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return net.Dial("unix", sock)
	}}}
	for _, tc := range []struct{ body string }{
		{`{"op":"install"}`},
		{`{"op":"rotate","key":"x"}`},
		{`{"op":"use","key":"x"}{"op":"remove","key":"y"}`},
		{`{"op":"use","key":"x","extra":true}`},
		{`[`},
		{`{"op":"use","key":"` + strings.Repeat("x", maxRequestBytes) + `"}`},
	} {
		resp, err := hc.Post("http://x/v1/keys", "application/json", strings.NewReader(tc.body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 400 {
			t.Errorf("%.60s: status %d, want 400", tc.body, resp.StatusCode)
		}
	}
	if len(f.got) != 0 {
		t.Fatalf("malformed requests reached the backend: %+v", f.got)
	}
	// A backend without key rotation answers 501, with an error body.
	_, err := NewClient(serve(t, &fakeBackend{})).Keys(context.Background(), "list", "")
	if err == nil || !strings.Contains(err.Error(), "does not support key rotation") {
		t.Fatalf("without KeyBackend: %v", err)
	}
}
