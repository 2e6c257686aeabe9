package release

import (
	"archive/tar"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/meshnet/meshnet/internal/pluginbundle"
)

// Build writes every artifact of version into out (emptied first): for
// each GOARCH in bins (GOARCH → folder holding meshnetd and meshctl built
// for it) the tarball, the .deb and the plugin tarball, then SHA256SUMS.
// root is the repository (unit, env file, README, LICENSE). It returns
// the artifacts' names.
func Build(out, version, root string, bins map[string]string) ([]string, error) {
	if err := os.RemoveAll(out); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return nil, err
	}
	arches := make([]string, 0, len(bins))
	for a := range bins {
		arches = append(arches, a)
	}
	sort.Strings(arches)
	var names []string
	for _, arch := range arches {
		bin := bins[arch]
		base := fmt.Sprintf("meshnet_%s_linux_%s", version, arch)
		err := tarGz(filepath.Join(out, base+".tar.gz"), base, map[string]string{
			"meshnetd":         filepath.Join(bin, "meshnetd"),
			"meshctl":          filepath.Join(bin, "meshctl"),
			"meshnetd.service": filepath.Join(root, "deploy/systemd/meshnetd.service"),
			"meshnetd.env":     filepath.Join(root, "deploy/systemd/meshnetd.env"),
			"README.md":        filepath.Join(root, "README.md"),
			"LICENSE":          filepath.Join(root, "LICENSE"),
		})
		if err != nil {
			return nil, err
		}
		deb := fmt.Sprintf("meshnet_%s_%s.deb", DebVersion(version), arch)
		if err := Deb(filepath.Join(out, deb), version, arch, bin, root); err != nil {
			return nil, err
		}
		plugin := fmt.Sprintf("meshnet-plugin_%s_linux_%s", version, arch)
		if err := pluginTarball(filepath.Join(out, plugin+".tar.gz"), plugin, bin); err != nil {
			return nil, err
		}
		names = append(names, base+".tar.gz", deb, plugin+".tar.gz")
	}
	if err := writeSums(out, names); err != nil {
		return nil, err
	}
	return append(names, "SHA256SUMS"), nil
}

// pluginTarball writes the managed plugin's bundle as a tarball whose one
// folder is what `docker plugin create meshnet FOLDER` takes.
func pluginTarball(out, prefix, bin string) error {
	dir, err := os.MkdirTemp("", "meshnet-plugin-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if err := pluginbundle.Write(dir, []string{filepath.Join(bin, "meshnetd"), filepath.Join(bin, "meshctl")}); err != nil {
		return err
	}
	files := map[string]string{}
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		files[rel] = p
		return nil
	})
	if err != nil {
		return err
	}
	return tarGz(out, prefix, files)
}

// tarGz writes files (name in the archive → path) under prefix/, owned by
// root, with their modes, in name order and with one fixed time, so the
// same inputs give the same bytes.
func tarGz(out, prefix string, files map[string]string) error {
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	zw := gzip.NewWriter(f)
	tw := tar.NewWriter(zw)
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	mtime := time.Unix(0, 0)
	dirs := map[string]bool{}
	for _, n := range names {
		for d := filepath.Dir(n); d != "."; d = filepath.Dir(d) {
			dirs[d] = true
		}
	}
	for _, d := range append([]string{"."}, sortedKeys(dirs)...) {
		name := prefix + "/"
		if d != "." {
			name = prefix + "/" + d + "/"
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: 0o755, ModTime: mtime, Format: tar.FormatPAX}); err != nil {
			return err
		}
	}
	for _, n := range names {
		src, err := os.Open(files[n])
		if err != nil {
			f.Close()
			return fmt.Errorf("release: %w", err)
		}
		fi, err := src.Stat()
		if err == nil {
			err = tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: prefix + "/" + n, Mode: int64(fi.Mode().Perm()), Size: fi.Size(), ModTime: mtime, Format: tar.FormatPAX})
		}
		if err == nil {
			_, err = io.Copy(tw, src)
		}
		src.Close()
		if err != nil {
			f.Close()
			return fmt.Errorf("release: writing %s: %w", out, err)
		}
	}
	if err := tw.Close(); err != nil {
		f.Close()
		return err
	}
	if err := zw.Close(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// writeSums writes dir/SHA256SUMS in sha256sum's format, so
// `sha256sum -c SHA256SUMS` checks a download.
func writeSums(dir string, names []string) error {
	var b strings.Builder
	for _, n := range names {
		f, err := os.Open(filepath.Join(dir, n))
		if err != nil {
			return err
		}
		h := sha256.New()
		_, err = io.Copy(h, f)
		f.Close()
		if err != nil {
			return err
		}
		fmt.Fprintf(&b, "%s  %s\n", hex.EncodeToString(h.Sum(nil)), n)
	}
	return os.WriteFile(filepath.Join(dir, "SHA256SUMS"), []byte(b.String()), 0o644)
}
