package ipam

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
)

// StateFile is the name of the local allocation table under Config.Dir.
const StateFile = "ipam.json"

const stateFormat = 1

// fileState is the local allocation table: which pools Docker requested
// here and which addresses this node handed out. What the node owns is
// not here: that lives in its own records in the store (persisted by the
// store's Persist hook).
type fileState struct {
	Node  string               `json:"node"`
	Pools map[string]*filePool `json:"pools"`
}

type filePool struct {
	Refs     int      `json:"refs"`
	Released bool     `json:"released,omitempty"`
	Addrs    []string `json:"addrs"`
}

// envelope carries a checksum, so a file damaged in any way is refused
// rather than read as a smaller table.
type envelope struct {
	Format int             `json:"format"`
	SHA256 string          `json:"sha256"`
	State  json.RawMessage `json:"state"`
}

func corrupt(path, why string) error {
	return fmt.Errorf("ipam state file %s is damaged (%s): meshnet will not guess which addresses are in use. "+
		"Restore the file from a backup; or, if no container on this host uses a meshnet address, "+
		"move it aside (mv %s %s.bad) and restart meshnetd", path, why, path, path)
}

// loadState reads the table. A missing file is an empty table; a damaged
// one is an error that names the file and what to do. Temporary files
// left by a write interrupted by a crash are removed: the rename never
// happened, so the table they were meant to replace is still whole.
func loadState(path string) (*fileState, error) {
	if stale, _ := filepath.Glob(path + ".tmp-*"); len(stale) > 0 {
		for _, f := range stale {
			_ = os.Remove(f)
		}
	}
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return &fileState{Pools: map[string]*filePool{}}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read ipam state: %w", err)
	}
	var env envelope
	if err := json.Unmarshal(data, &env); err != nil {
		return nil, corrupt(path, "not valid JSON: "+err.Error())
	}
	if env.Format != stateFormat {
		return nil, fmt.Errorf("ipam state file %s has format %d; this meshnetd reads format %d: use a meshnetd at least as new as the one that wrote it", path, env.Format, stateFormat)
	}
	// The checksum is over the compact form: the file is indented for
	// people to read.
	var compact bytes.Buffer
	if err := json.Compact(&compact, env.State); err != nil {
		return nil, corrupt(path, "bad table: "+err.Error())
	}
	sum := sha256.Sum256(compact.Bytes())
	if hex.EncodeToString(sum[:]) != env.SHA256 {
		return nil, corrupt(path, "checksum mismatch")
	}
	var st fileState
	if err := json.Unmarshal(env.State, &st); err != nil {
		return nil, corrupt(path, "bad table: "+err.Error())
	}
	if st.Pools == nil {
		st.Pools = map[string]*filePool{}
	}
	for key, p := range st.Pools {
		subnet, err := netip.ParsePrefix(key)
		if err != nil || p == nil {
			return nil, corrupt(path, fmt.Sprintf("bad pool %q", key))
		}
		for _, s := range p.Addrs {
			a, err := netip.ParseAddr(s)
			if err != nil || !subnet.Contains(a) {
				return nil, corrupt(path, fmt.Sprintf("bad address %q in pool %s", s, key))
			}
		}
	}
	return &st, nil
}

func encodeState(st *fileState) ([]byte, error) {
	raw, err := json.Marshal(st)
	if err != nil {
		return nil, fmt.Errorf("encode ipam state: %w", err)
	}
	return sealEnvelope(raw), nil
}

// sealEnvelope wraps compact JSON in an envelope with its checksum
// (written by hand: json.Marshal would re-validate the table each time).
func sealEnvelope(raw []byte) []byte {
	sum := sha256.Sum256(raw)
	out := make([]byte, 0, len(raw)+120)
	out = fmt.Appendf(out, `{"format":%d,"sha256":"%s","state":`, stateFormat, hex.EncodeToString(sum[:]))
	out = append(out, raw...)
	return append(out, "}\n"...)
}
