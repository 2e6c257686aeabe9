package daemon

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/meshnet/meshnet/gossip"
	"github.com/meshnet/meshnet/internal/atomicfile"
)

// peersFile keeps the peers this node has known, so that after a restart it
// finds its cluster again even when it was started without --join (the
// first node of a cluster) or its seeds are gone.
const peersFile = "peers.json"

// loadKnownPeers reads the peers of an earlier run. A missing file is an
// empty list; a corrupt one is logged and ignored, since the list is only a
// hint (seeds and the others' rejoins find this node too).
func (d *Daemon) loadKnownPeers() []gossip.KnownPeer {
	path := filepath.Join(d.cfg.StateDir, peersFile)
	buf, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	var peers []gossip.KnownPeer
	if err == nil {
		err = json.Unmarshal(buf, &peers)
	}
	if err != nil {
		d.log.Warn("ignoring the list of known peers", "file", path, "err", err)
		return nil
	}
	d.knownPeers = peers
	return peers
}

// saveKnownPeers writes the peers of snap when they changed since the last
// write. Called from the reconcile loop, so never concurrently.
func (d *Daemon) saveKnownPeers(snap *gossip.Snapshot) {
	peers := gossip.KnownPeers(snap, d.cfg.NodeName)
	if len(peers) == 0 || slices.Equal(peers, d.knownPeers) {
		// An empty list never replaces a known one: a node that lost its
		// records still wants to find its old peers.
		return
	}
	buf, err := json.Marshal(peers)
	if err == nil {
		err = atomicfile.Write(filepath.Join(d.cfg.StateDir, peersFile), buf, 0o600)
	}
	if err != nil {
		d.log.Warn("saving the list of known peers", "err", fmt.Errorf("write %s: %w", peersFile, err))
		return
	}
	d.knownPeers = peers
}
