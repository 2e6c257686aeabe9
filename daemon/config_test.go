package daemon

import (
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestGossipKey(t *testing.T) {
	dir := t.TempDir()
	good := base64.StdEncoding.EncodeToString(make([]byte, 32))
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cases := []struct {
		name    string
		cfg     Config
		wantErr string // "" = ok
		wantNil bool
	}{
		{"key file", Config{KeyFile: write("good", good+"\n")}, "", false},
		{"env key", Config{Key: good}, "", false},
		{"file wins over env", Config{KeyFile: write("good2", good), Key: "junk"}, "", false},
		{"missing", Config{}, "meshctl keygen", false},
		{"insecure", Config{Insecure: true}, "", true},
		{"missing file", Config{KeyFile: filepath.Join(dir, "nope")}, "meshctl keygen", false},
		{"not base64", Config{KeyFile: write("bad", "!!!")}, "not base64", false},
		{"short", Config{KeyFile: write("short", base64.StdEncoding.EncodeToString(make([]byte, 16)))}, "16 bytes", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			key, err := c.cfg.GossipKey()
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("want error containing %q, got %v", c.wantErr, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.wantNil != (key == nil) {
				t.Fatalf("key = %v", key)
			}
		})
	}
}

func TestDefaultRouteInterface(t *testing.T) {
	p := filepath.Join(t.TempDir(), "route")
	table := "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n" +
		"eth1\t0012A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n" +
		"eth0\t00000000\t0102A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n"
	if err := os.WriteFile(p, []byte(table), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := defaultRouteInterface(p); got != "eth0" {
		t.Fatalf("got %q, want eth0", got)
	}
}

// An IPv6-only host's default route, as /proc/net/ipv6_route lists it:
// the kernel's unreachable default on lo is not it.
func TestDefaultRouteInterface6(t *testing.T) {
	p := filepath.Join(t.TempDir(), "ipv6_route")
	zero := strings.Repeat("0", 32)
	table := "fd000000000000000000000000000000 40 " + zero + " 00 " + zero + " 00000100 00000001 00000000 00000001     ens3\n" +
		zero + " 00 " + zero + " 00 " + zero + " ffffffff 00000001 00000000 00200200       lo\n" +
		zero + " 00 " + zero + " 00 fe800000000000000000000000000001 00000400 00000002 00000000 00000003     ens3\n"
	if err := os.WriteFile(p, []byte(table), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := defaultRouteInterface6(p); got != "ens3" {
		t.Fatalf("got %q, want ens3", got)
	}
}

func TestDNSUpstreams(t *testing.T) {
	for _, tc := range []struct {
		in      []string
		want    []string
		wantErr string
	}{
		{in: nil, want: nil},
		{in: []string{"none"}, want: []string{}},
		{in: []string{"192.0.2.1", "192.0.2.2:5353", "[2001:db8::1]:53"}, want: []string{"192.0.2.1:53", "192.0.2.2:5353", "[2001:db8::1]:53"}},
		{in: []string{"dns.example"}, wantErr: `--dns-upstream "dns.example"`},
		{in: []string{"none", "192.0.2.1"}, wantErr: `--dns-upstream "none"`},
	} {
		c := DefaultConfig()
		c.DNSUpstreams = tc.in
		err := c.Validate()
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%q: error %v, want one mentioning %s", tc.in, err, tc.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", tc.in, err)
			continue
		}
		got := c.upstreams()
		if (got == nil) != (tc.want == nil) || strings.Join(got, ",") != strings.Join(tc.want, ",") {
			t.Errorf("%q: upstreams %#v, want %#v", tc.in, got, tc.want)
		}
	}
}

func TestDNSRateLimit(t *testing.T) {
	for _, tc := range []struct {
		qps     float64
		wantErr bool
	}{{0, false}, {2000, false}, {-1, true}, {1e9, true}} {
		c := DefaultConfig()
		c.Insecure = true
		c.AdvertiseAddr = "192.0.2.1"
		c.DNSRateLimit = tc.qps
		err := c.Validate()
		if gotErr := err != nil && strings.Contains(err.Error(), "--dns-rate-limit"); gotErr != tc.wantErr {
			t.Errorf("DNSRateLimit %v: Validate() = %v, want error about --dns-rate-limit: %v", tc.qps, err, tc.wantErr)
		}
	}
}
