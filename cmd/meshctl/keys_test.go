package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshnet/meshnet/control"
)

// keysDaemon is a control backend whose nodes answer key operations; node
// "c" is down.
type keysDaemon struct{ ops []control.KeysRequest }

func (k *keysDaemon) Peers() []control.Peer                                       { return nil }
func (k *keysDaemon) Status() control.Status                                      { return control.Status{} }
func (k *keysDaemon) Networks() []control.Network                                 { return nil }
func (k *keysDaemon) Endpoints() []control.Endpoint                               { return nil }
func (k *keysDaemon) Services() []control.Service                                 { return nil }
func (k *keysDaemon) Version() control.Version                                    { return control.Version{} }
func (k *keysDaemon) RemovePeer(context.Context, control.RemovePeerRequest) error { return nil }
func (k *keysDaemon) Lookup(string, string) (control.Lookup, error)               { return control.Lookup{}, nil }

const (
	oldKey = "b2xkLWtleS0wMTIzNDU2Nzg5YWJjZGVmMDEyMzQ1Njc=" // 32 bytes
	newKey = "bmV3LWtleS0wMTIzNDU2Nzg5YWJjZGVmMDEyMzQ1Njc="
)

func (k *keysDaemon) Keys(_ context.Context, req control.KeysRequest) (control.KeysReply, error) {
	k.ops = append(k.ops, req)
	ok := control.KeyNode{Node: "a", OK: true, Primary: oldKey, Keys: []string{oldKey, newKey}}
	r := control.KeysReply{Op: req.Op, Nodes: []control.KeyNode{ok, {Node: "b", OK: true, Primary: oldKey, Keys: []string{oldKey, newKey}}},
		Keys: []control.KeyUse{{Key: oldKey, Installed: 2, Primary: 2}, {Key: newKey, Installed: 2}}}
	if req.Op == "install" {
		r.Nodes = append(r.Nodes, control.KeyNode{Node: "c", Error: "not reached: the node is dead; rerun this command once it is back"})
	}
	return r, nil
}

func serveKeys(t *testing.T) (string, *keysDaemon) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "meshnet.sock")
	kd := &keysDaemon{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- control.Serve(ctx, sock, control.NewHandler(kd, nil)) }()
	t.Cleanup(func() { cancel(); <-done })
	for deadline := time.Now().Add(5 * time.Second); ; {
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			return sock, kd
		}
		if time.Now().After(deadline) {
			t.Fatal("control socket did not come up")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestKeysCommand(t *testing.T) {
	sock, kd := serveKeys(t)
	var out, errb bytes.Buffer
	if code := run([]string{"--socket", sock, "keys", "list"}, &out, &errb); code != 0 {
		t.Fatalf("list: exit %d: %s", code, errb.String())
	}
	if !strings.Contains(out.String(), "NODE") || !strings.Contains(out.String(), oldKey) || !strings.Contains(out.String(), keyID(newKey)) {
		t.Fatalf("list table:\n%s", out.String())
	}
	// A node that did not apply the step makes the command fail, after
	// printing every node's result.
	out.Reset()
	errb.Reset()
	if code := run([]string{"--socket", sock, "-o", "json", "keys", "install", newKey}, &out, &errb); code != 1 {
		t.Fatalf("install with a node down: exit %d, want 1", code)
	}
	var res control.KeysReply
	if err := json.Unmarshal(out.Bytes(), &res); err != nil || len(res.Nodes) != 3 || res.Nodes[2].OK {
		t.Fatalf("json: %v\n%s", err, out.String())
	}
	if !strings.Contains(errb.String(), "1 of 3 nodes") {
		t.Fatalf("stderr: %s", errb.String())
	}
	if kd.ops[1] != (control.KeysRequest{Op: "install", Key: newKey}) {
		t.Fatalf("daemon saw %+v", kd.ops)
	}
	for _, args := range [][]string{{"keys"}, {"keys", "use"}, {"keys", "rotate", newKey}, {"keys", "list", "x"}, {"keys", "remove", "a", "b"}} {
		if code := run(append([]string{"--socket", sock}, args...), &out, &errb); code != 2 {
			t.Errorf("%v: exit %d, want 2 (usage)", args, code)
		}
	}
	if len(kd.ops) != 2 {
		t.Fatalf("usage errors reached the daemon: %+v", kd.ops)
	}
}
