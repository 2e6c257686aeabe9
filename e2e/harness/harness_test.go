package harness

import (
	"context"
	"errors"
	"net/netip"
	"os/exec"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestParseSSHSpec(t *testing.T) {
	for _, tc := range []struct {
		spec string
		want []sshTarget
		err  bool
	}{
		{"root@10.0.0.1", []sshTarget{{"root", "10.0.0.1", 22}}, false},
		{"10.0.0.1:2222", []sshTarget{{"root", "10.0.0.1", 2222}}, false},
		{" admin@h1 , root@10.0.0.2:22 ", []sshTarget{{"admin", "h1", 22}, {"root", "10.0.0.2", 22}}, false},
		{"root@[fd00::1]:2200", []sshTarget{{"root", "fd00::1", 2200}}, false},
		{"root@fd00::1", []sshTarget{{"root", "fd00::1", 22}}, false},
		{"", nil, true},
		{"@10.0.0.1", nil, true},
		{"root@10.0.0.1:99999", nil, true},
		{"root@:22", nil, true},
	} {
		got, err := parseSSHSpec(tc.spec)
		if (err != nil) != tc.err {
			t.Errorf("parseSSHSpec(%q) error = %v, want error %v", tc.spec, err, tc.err)
			continue
		}
		if !tc.err && !reflect.DeepEqual(got, tc.want) {
			t.Errorf("parseSSHSpec(%q) = %+v, want %+v", tc.spec, got, tc.want)
		}
	}
}

// TestShellJoinRoundTrip runs the quoted line through a real shell: the arguments must come
// out as they went in, as they do over ssh.
func TestShellJoinRoundTrip(t *testing.T) {
	args := []string{"plain", "a b", "$HOME", "it's", `"q"`, "*", "", "back\\slash", "new\nline", "semi;colon", "~tilde", "a=b,c:d@e%f+g"}
	line := shellJoin(append([]string{"printf", "[%s]"}, args...))
	out, err := exec.Command("sh", "-c", line).Output()
	if err != nil {
		t.Fatalf("sh -c %q: %v", line, err)
	}
	want := "[" + strings.Join(args, "][") + "]"
	if string(out) != want {
		t.Errorf("round trip through sh:\n got %q\nwant %q\nline %s", out, want, line)
	}
	if q := shellQuote("safe-arg_1.2/x:y=z"); q != "safe-arg_1.2/x:y=z" {
		t.Errorf("safe argument quoted needlessly: %s", q)
	}
}

func TestParseMountinfo(t *testing.T) {
	const mi = `22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
23 22 0:21 / /sys rw,nosuid - sysfs sysfs rw
24 23 0:22 / /sys/fs/cgroup rw - tmpfs tmpfs rw,mode=755
25 24 0:23 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
26 22 0:30 / /tmp/w/host1/fs/run rw - tmpfs tmpfs rw
27 26 0:31 / /tmp/w/host1/fs/run/docker/netns/x rw - nsfs nsfs rw
28 22 0:32 / /tmp/w\040space rw - tmpfs tmpfs rw
29 22 0:33 / /tmp/wx rw shared:5 master:2 - tmpfs tmpfs rw
`
	entries := parseMountinfo(strings.NewReader(mi))
	if len(entries) != 8 {
		t.Fatalf("parsed %d entries, want 8: %+v", len(entries), entries)
	}
	if entries[3].fstype != "cgroup" || entries[3].mountPoint != "/sys/fs/cgroup/memory" {
		t.Errorf("entry 3 = %+v", entries[3])
	}
	if entries[6].mountPoint != "/tmp/w space" {
		t.Errorf("octal escape not decoded: %q", entries[6].mountPoint)
	}
	if entries[7].fstype != "tmpfs" {
		t.Errorf("optional fields confused the parser: %+v", entries[7])
	}
	got := mountsUnder(entries, "/tmp/w/")
	want := []string{"/tmp/w/host1/fs/run/docker/netns/x", "/tmp/w/host1/fs/run"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("mountsUnder = %v, want %v (deepest first, not /tmp/wx or /tmp/w space)", got, want)
	}
}

func TestParseStatPPID(t *testing.T) {
	for _, tc := range []struct {
		stat string
		ppid int
		ok   bool
	}{
		{"1234 (sleep) S 77 1234 1234 0 -1", 77, true},
		{"1234 (a) b) (c) R 88 1 1", 88, true},
		{"1234 (x y) Z 9 0", 9, true},
		{"garbage", 0, false},
	} {
		ppid, ok := parseStatPPID([]byte(tc.stat))
		if ppid != tc.ppid || ok != tc.ok {
			t.Errorf("parseStatPPID(%q) = %d, %v; want %d, %v", tc.stat, ppid, ok, tc.ppid, tc.ok)
		}
	}
}

func TestHostVictims(t *testing.T) {
	procs := []procInfo{
		{pid: 1, ppid: 0, mnt: "mnt:[1]", net: "net:[1]"},
		{pid: 10, ppid: 1, mnt: "mnt:[1]", net: "net:[1]"},   // unrelated machine process
		{pid: 20, ppid: 1, mnt: "mnt:[H]", net: "net:[H]"},   // anchor
		{pid: 21, ppid: 99, mnt: "mnt:[H]", net: "net:[H]"},  // dockerd
		{pid: 22, ppid: 1, mnt: "mnt:[H]", net: "net:[H]"},   // containerd shim, reparented
		{pid: 23, ppid: 22, mnt: "mnt:[C]", net: "net:[C]"},  // container, own namespaces
		{pid: 24, ppid: 23, mnt: "mnt:[C]", net: "net:[C]"},  // its child
		{pid: 30, ppid: 1, mnt: "mnt:[X]", net: "net:[H]"},   // host-network container
		{pid: 40, ppid: 1, mnt: "mnt:[O]", net: "net:[O]"},   // other host
		{pid: 41, ppid: 1, mnt: "mnt:[O2]", net: "net:[O2]"}, // found through cgroups only
		{pid: 50, ppid: 10, mnt: "mnt:[1]", net: "net:[1]"},  // child of an unrelated process
		{pid: 60, ppid: 21, mnt: "mnt:[H]", net: "net:[H]"},  // excluded explicitly
		{pid: 61, ppid: 60, mnt: "mnt:[Z]", net: "net:[Z]"},  // child of the excluded one
		{pid: 62, ppid: 1, mnt: "", net: ""},                 // zombie: namespaces unreadable
	}
	got := hostVictims(procs, "mnt:[H]", "net:[H]", []int{41}, map[int]bool{60: true})
	want := []int{20, 21, 22, 23, 24, 30, 41}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("hostVictims = %v, want %v", got, want)
	}
	if got := hostVictims(procs, "", "", nil, nil); len(got) != 0 {
		t.Errorf("empty namespace identities matched %v", got)
	}
}

func TestHostAddr(t *testing.T) {
	if a := hostAddr(netip.MustParsePrefix("198.18.0.0/24"), 1); a != netip.MustParseAddr("198.18.0.11") {
		t.Errorf("host 1: %s", a)
	}
	if a := hostAddr(netip.MustParsePrefix("198.18.0.0/16"), 250); a != netip.MustParseAddr("198.18.1.4") {
		t.Errorf("host 250 in a /16: %s", a)
	}
}

func TestParsePeers(t *testing.T) {
	peers, err := ParsePeers(`[{"name":"host1","address":"198.18.0.11:7946","state":"alive","self":true,"since":"x"},
		{"name":"host2","address":"198.18.0.12","state":"dead","self":false}]`)
	if err != nil {
		t.Fatal(err)
	}
	want := []Peer{{"host1", "198.18.0.11:7946", "alive", true}, {"host2", "198.18.0.12", "dead", false}}
	if !reflect.DeepEqual(peers, want) {
		t.Errorf("ParsePeers = %+v, want %+v", peers, want)
	}
	for _, bad := range []string{"", "NAME STATE\nhost1 alive", `[{"address":"x"}]`, `{"name":"a"}`} {
		if _, err := ParsePeers(bad); err == nil {
			t.Errorf("ParsePeers(%q) accepted", bad)
		}
	}
}

func TestStripIptablesCounters(t *testing.T) {
	a := "# Generated by iptables-save v1.8.9 on Mon\n*filter\n:INPUT ACCEPT [10:200]\n:FORWARD DROP [0:0]\n-A FORWARD -j DOCKER-USER\nCOMMIT\n# Completed on Mon\n"
	b := "# Generated by iptables-save v1.8.9 on Tue\n*filter\n:INPUT ACCEPT [99:9999]\n:FORWARD DROP [5:50]\n-A FORWARD -j DOCKER-USER\nCOMMIT\n# Completed on Tue\n"
	if stripIptablesCounters(a) != stripIptablesCounters(b) {
		t.Error("counters and comments make equal rule sets differ")
	}
	c := strings.Replace(b, "DOCKER-USER", "MESHNET", 1)
	if stripIptablesCounters(a) == stripIptablesCounters(c) {
		t.Error("different rules compare equal")
	}
}

func TestTail(t *testing.T) {
	if got := tail("a\nb\nc\n", 2); got != "b\nc" {
		t.Errorf("tail = %q", got)
	}
	if got := tail("a", 5); got != "a" {
		t.Errorf("tail = %q", got)
	}
}

func TestPoll(t *testing.T) {
	n := 0
	if err := Poll(context.Background(), func() error {
		n++
		if n < 3 {
			return errors.New("not yet")
		}
		return nil
	}); err != nil || n != 3 {
		t.Errorf("Poll = %v after %d calls", err, n)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := Poll(ctx, func() error { return errors.New("never") }); err == nil || err.Error() != "never" {
		t.Errorf("Poll on timeout = %v, want the last error", err)
	}
}

func TestCommandErrorCarriesOutput(t *testing.T) {
	err := error(&CommandError{Host: "h1", Args: []string{"docker", "run", "a b"}, Output: "boom\n", Err: errors.New("exit status 125")})
	s := err.Error()
	for _, want := range []string{"h1", "docker run 'a b'", "exit status 125", "boom"} {
		if !strings.Contains(s, want) {
			t.Errorf("%q lacks %q", s, want)
		}
	}
}
