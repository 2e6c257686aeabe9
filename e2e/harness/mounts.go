package harness

import (
	"bufio"
	"io"
	"os"
	"sort"
	"strings"
	"syscall"
)

// mountEntry is one line of /proc/PID/mountinfo.
type mountEntry struct {
	mountPoint string
	fstype     string
}

// parseMountinfo reads mountinfo lines: "36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw".
// Mount points escape spaces and other bytes as octal (\040).
func parseMountinfo(r io.Reader) []mountEntry {
	var out []mountEntry
	s := bufio.NewScanner(r)
	s.Buffer(make([]byte, 64*1024), 1024*1024)
	for s.Scan() {
		f := strings.Fields(s.Text())
		if len(f) < 7 {
			continue
		}
		sep := -1
		for i := 6; i < len(f); i++ {
			if f[i] == "-" {
				sep = i
				break
			}
		}
		if sep < 0 || sep+1 >= len(f) {
			continue
		}
		out = append(out, mountEntry{mountPoint: unescapeMountinfo(f[4]), fstype: f[sep+1]})
	}
	return out
}

func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) && isOctal(s[i+1]) && isOctal(s[i+2]) && isOctal(s[i+3]) {
			b.WriteByte((s[i+1]-'0')<<6 | (s[i+2]-'0')<<3 | (s[i+3] - '0'))
			i += 3
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isOctal(c byte) bool { return c >= '0' && c <= '7' }

// mountsUnder returns the mount points at or below dir, deepest first, so they can be
// unmounted in order.
func mountsUnder(entries []mountEntry, dir string) []string {
	dir = strings.TrimRight(dir, "/")
	seen := map[string]bool{}
	var out []string
	for _, m := range entries {
		if (m.mountPoint == dir || strings.HasPrefix(m.mountPoint, dir+"/")) && !seen[m.mountPoint] {
			seen[m.mountPoint] = true
			out = append(out, m.mountPoint)
		}
	}
	sort.SliceStable(out, func(i, j int) bool {
		return strings.Count(out[i], "/") > strings.Count(out[j], "/")
	})
	return out
}

// unmountUnder lazily unmounts, in the test process's mount namespace, everything mounted at
// or below dir. The simulated hosts mount only inside their own private namespaces, so this
// finds nothing unless something went wrong; it is the last line of the teardown.
func unmountUnder(dir string) error {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return err
	}
	entries := parseMountinfo(f)
	f.Close()
	var firstErr error
	for _, mp := range mountsUnder(entries, dir) {
		if err := syscall.Unmount(mp, syscall.MNT_DETACH); err != nil && err != syscall.EINVAL && err != syscall.ENOENT && firstErr == nil {
			firstErr = err
		}
	}
	return firstErr
}
