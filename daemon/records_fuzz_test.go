package daemon

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/meshnet/meshnet/gossip"
)

// FuzzRecordsFile: the node's own records on disk (records.json). Nothing
// may panic; a file that loads holds only valid records of this node, and
// the error of one that does not names the file.
// Run it for real with: go test ./daemon/ -run XXX -fuzz FuzzRecordsFile
func FuzzRecordsFile(f *testing.F) {
	f.Add([]byte(`{"records":[{"kind":"node","owner":"n1","id":"","version":5,"value":{"addr":"198.18.0.11"}}],"collected_up_to":3}`))
	f.Add([]byte(`{"records":[{"kind":"endpoint","owner":"n2","id":"e","version":5}]}`))
	f.Add([]byte(`{"records":[{"kind":"","owner":"n1","version":0}]}`))
	f.Add([]byte(`{"records":null,"collected_up_to":18446744073709551615}`))
	f.Add([]byte(`{"records":[{"kind":"block","owner":"n1","id":"x","version":1,"deleted":true}]}`))
	f.Add([]byte(`[`))
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(t.TempDir(), recordsFile)
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		d := &Daemon{log: slog.New(slog.DiscardHandler), store: gossip.NewStore(gossip.StoreConfig{Self: "n1"})}
		if err := d.loadRecords(path); err != nil {
			if !strings.Contains(err.Error(), path) {
				t.Fatalf("the error does not name the file: %v", err)
			}
			return
		}
		for _, r := range d.store.All() {
			if r.Owner != "n1" || r.Version == 0 || r.Kind == "" {
				t.Fatalf("loaded a record that is not this node's or not valid: %+v", r)
			}
		}
	})
}
