package daemon

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/meshnet/meshnet/control"
	"github.com/meshnet/meshnet/gossip"
)

func testKey(b byte) []byte { return bytes.Repeat([]byte{b}, 32) }

func logTo(b *bytes.Buffer) *slog.Logger { return slog.New(slog.NewTextHandler(b, nil)) }

// The key flag seeds the keyring on the first start only; the persisted
// keyring (0600) wins afterwards and a differing flag is warned about.
func TestLoadKeyringPersistsAndThenWins(t *testing.T) {
	dir := t.TempDir()
	cfg := Config{StateDir: dir, Key: base64.StdEncoding.EncodeToString(testKey(1))}
	var logs bytes.Buffer
	ring, err := loadKeyring(cfg, logTo(&logs))
	if err != nil || !bytes.Equal(ring.Primary, testKey(1)) || len(ring.Keys) != 1 {
		t.Fatalf("first start: %+v %v", ring, err)
	}
	path := filepath.Join(dir, keyringFile)
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("keyring file: %v %v, want mode 0600", fi, err)
	}

	// A rotation happened: primary 2, 1 still installed.
	rotated := gossip.KeyringState{Primary: testKey(2), Keys: [][]byte{testKey(2), testKey(1)}}
	if err := saveKeyring(path, rotated); err != nil {
		t.Fatal(err)
	}
	logs.Reset()
	ring, err = loadKeyring(cfg, logTo(&logs))
	if err != nil || !bytes.Equal(ring.Primary, testKey(2)) || len(ring.Keys) != 2 {
		t.Fatalf("restart after rotation: primary %s, %d keys, %v", gossip.KeyID(ring.Primary), len(ring.Keys), err)
	}
	if strings.Contains(logs.String(), "not in the persisted keyring") {
		t.Fatalf("warned about a key flag that is in the keyring:\n%s", logs.String())
	}
	// A key file naming a key the keyring does not hold is ignored, loudly.
	cfg.Key = base64.StdEncoding.EncodeToString(testKey(3))
	logs.Reset()
	ring, err = loadKeyring(cfg, logTo(&logs))
	if err != nil || !bytes.Equal(ring.Primary, testKey(2)) {
		t.Fatalf("restart with another key flag: %v", err)
	}
	if !strings.Contains(logs.String(), "not in the persisted keyring") {
		t.Fatalf("no warning about the ignored key flag:\n%s", logs.String())
	}
	// No key flag at all: the keyring is enough.
	ring, err = loadKeyring(Config{StateDir: dir}, logTo(&logs))
	if err != nil || !bytes.Equal(ring.Primary, testKey(2)) {
		t.Fatalf("restart without a key flag: %v", err)
	}
	// Looser permissions are tightened.
	os.Chmod(path, 0o644)
	if _, err := loadKeyring(Config{StateDir: dir}, logTo(&logs)); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v after load, want 0600", fi.Mode().Perm())
	}
}

func TestLoadKeyringRefusesDamage(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, keyringFile)
	for _, bad := range []string{"", "{", `{"primary":"AAAA","keys":["AAAA"]}`, `{"primary":null}`} {
		os.WriteFile(path, []byte(bad), 0o600)
		_, err := loadKeyring(Config{StateDir: dir, Key: base64.StdEncoding.EncodeToString(testKey(1))}, logTo(&bytes.Buffer{}))
		if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "move it aside") {
			t.Errorf("%q: %v", bad, err)
		}
	}
}

// --insecure is warned about at every start: unencrypted, or without
// effect because a key or keyring encrypts anyway.
func TestInsecureWarnsAtEveryStart(t *testing.T) {
	dir := t.TempDir()
	for i := range 2 {
		var logs bytes.Buffer
		ring, err := loadKeyring(Config{StateDir: dir, Insecure: true}, logTo(&logs))
		if err != nil || ring.Primary != nil {
			t.Fatalf("start %d: %v", i, err)
		}
		if !strings.Contains(logs.String(), "level=WARN") || !strings.Contains(logs.String(), "NOT encrypted") {
			t.Fatalf("start %d: no warning:\n%s", i, logs.String())
		}
		if _, err := os.Stat(filepath.Join(dir, keyringFile)); !os.IsNotExist(err) {
			t.Fatalf("an insecure start wrote a keyring: %v", err)
		}
	}
	var logs bytes.Buffer
	cfg := Config{StateDir: dir, Insecure: true, Key: base64.StdEncoding.EncodeToString(testKey(1))}
	if _, err := loadKeyring(cfg, logTo(&logs)); err != nil || !strings.Contains(logs.String(), "--insecure has no effect") {
		t.Fatalf("insecure with a key: %v\n%s", err, logs.String())
	}
	logs.Reset()
	if _, err := loadKeyring(cfg, logTo(&logs)); err != nil || !strings.Contains(logs.String(), "--insecure has no effect") {
		t.Fatalf("insecure with a keyring: %v\n%s", err, logs.String())
	}
}

func TestKeysReplyCountsKeys(t *testing.T) {
	r := keysReply("list", []gossip.NodeKeys{
		{Node: "a", Primary: testKey(2), Keys: [][]byte{testKey(2), testKey(1)}},
		{Node: "b", Primary: testKey(1), Keys: [][]byte{testKey(1), testKey(2)}},
		{Node: "c", Err: "not reached: the node is dead"},
	})
	if r.Failed() != 1 || len(r.Nodes) != 3 || len(r.Keys) != 2 {
		t.Fatalf("%+v", r)
	}
	for _, k := range r.Keys {
		if k.Installed != 2 || k.Primary != 1 {
			t.Errorf("key %s: installed %d primary %d, want 2 and 1", k.Key, k.Installed, k.Primary)
		}
	}
	out, _ := json.Marshal(r)
	if !strings.Contains(string(out), `"ok":false`) || !strings.Contains(string(out), `"error":"not reached`) {
		t.Fatalf("json: %s", out)
	}
}

// meshctl keys through the daemon's backend, on a one-node cluster: the
// key arrives as base64, the change is persisted in the state directory.
func TestControlBackendKeys(t *testing.T) {
	dir := t.TempDir()
	d := &Daemon{cfg: Config{StateDir: dir, NodeName: "solo"}}
	store := gossip.NewStore(gossip.StoreConfig{Self: "solo"})
	c, err := gossip.New(gossip.Config{
		NodeName: "solo", BindAddr: "127.0.9.1", BindPort: 0, Key: testKey(1),
		Label: "meshnet-test", PersistKeys: d.persistKeys,
	}, store)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	d.cluster = c
	b := controlBackend{d}
	ctx := t.Context()
	newKey := base64.StdEncoding.EncodeToString(testKey(2))
	res, err := b.Keys(ctx, control.KeysRequest{Op: "install", Key: newKey})
	if err != nil || len(res.Nodes) != 1 || !res.Nodes[0].OK || len(res.Keys) != 2 {
		t.Fatalf("install: %+v %v", res, err)
	}
	if _, err := b.Keys(ctx, control.KeysRequest{Op: "use", Key: newKey}); err != nil {
		t.Fatal(err)
	}
	ring, err := loadKeyring(Config{StateDir: dir}, logTo(&bytes.Buffer{}))
	if err != nil || !bytes.Equal(ring.Primary, testKey(2)) || len(ring.Keys) != 2 {
		t.Fatalf("persisted keyring after use: %v", err)
	}
	for _, bad := range []control.KeysRequest{
		{Op: "install", Key: "not base64"},
		{Op: "install", Key: base64.StdEncoding.EncodeToString([]byte("short"))},
		{Op: "remove", Key: newKey}, // the primary
	} {
		_, err := b.Keys(ctx, bad)
		var ue control.UserError
		if !errors.As(err, &ue) {
			t.Errorf("%+v: %v, want a user error", bad, err)
		}
	}
}
