package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/meshnet/meshnet/gossip"
	"github.com/meshnet/meshnet/ipam"
	"github.com/meshnet/meshnet/plugin"
)

// BenchmarkPluginRequestAddress measures allocations as Docker makes them:
// IpamDriver.RequestAddress over the plugin's unix socket (HTTP+JSON), into
// the real IPAM persisting every change to disk, releasing the oldest once
// 200 are held. Compare with ipam's BenchmarkRequestAddress (in-process).
//
//	go test ./daemon -run XXX -bench PluginRequestAddress
func BenchmarkPluginRequestAddress(b *testing.B) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	log := slog.New(slog.DiscardHandler)
	dir := b.TempDir()
	store := gossip.NewStore(gossip.StoreConfig{Self: "n1", Log: log, Persist: func(gossip.OwnState) error { return nil }})
	store.SetMember(gossip.Member{Name: "n1", Addr: "127.0.0.1", State: gossip.StateAlive})
	alloc, err := ipam.New(ipam.Config{Store: store, Dir: filepath.Join(dir, "ipam"), Log: log})
	if err != nil {
		b.Fatal(err)
	}
	if err := alloc.MarkJoined("benchmark"); err != nil {
		b.Fatal(err)
	}
	go alloc.Run(ctx)
	d := &Daemon{ipam: alloc, log: log, store: store}
	// A short path: unix socket paths are limited to 108 bytes.
	sockDir, err := os.MkdirTemp("", "mnb")
	if err != nil {
		b.Fatal(err)
	}
	defer os.RemoveAll(sockDir)
	sock := filepath.Join(sockDir, "p.sock")
	go plugin.Serve(ctx, sock, plugin.NewHandler(networkBackend{d}, ipamBackend{d}, log))
	client := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", sock)
		},
		MaxIdleConnsPerHost: 4,
	}}
	call := func(path string, req, reply any) error {
		body, _ := json.Marshal(req)
		resp, err := client.Post("http://plugin"+path, "application/vnd.docker.plugins.v1.2+json", bytes.NewReader(body))
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			var e map[string]any
			_ = json.NewDecoder(resp.Body).Decode(&e)
			return fmt.Errorf("%s: %d %v", path, resp.StatusCode, e)
		}
		if reply == nil {
			return nil
		}
		return json.NewDecoder(resp.Body).Decode(reply)
	}
	var pool struct{ PoolID string }
	deadline := time.Now().Add(5 * time.Second)
	for {
		err = call("/IpamDriver.RequestPool", map[string]any{"AddressSpace": "meshnet-local", "Pool": "10.42.0.0/16"}, &pool)
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond) // the socket is not up yet
	}
	if err != nil {
		b.Fatal(err)
	}
	var held []string
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		var got struct{ Address string }
		if err := call("/IpamDriver.RequestAddress", map[string]any{"PoolID": pool.PoolID}, &got); err != nil {
			b.Fatal(err)
		}
		p, _, _ := bytes.Cut([]byte(got.Address), []byte("/"))
		held = append(held, string(p))
		if len(held) > 200 {
			if err := call("/IpamDriver.ReleaseAddress", map[string]any{"PoolID": pool.PoolID, "Address": held[0]}, nil); err != nil {
				b.Fatal(err)
			}
			held = held[1:]
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "allocs/s")
}
