package pluginbundle

import (
	"debug/elf"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// Write makes dir a plugin bundle: dir/config.json (Manifest) and
// dir/rootfs/ holding a copy of each binary under its base name, and
// nothing else. The runtime creates the mount points, /dev, /proc and /sys.
// An existing rootfs is replaced whole, so a binary dropped from the list
// does not linger in the next bundle.
//
// Every binary must be a static ELF executable: the rootfs has no dynamic
// loader or libc, and a dynamic binary would fail at `docker plugin enable`
// with a bare "no such file or directory".
func Write(dir string, binaries []string) error {
	if len(binaries) == 0 {
		return errors.New("plugin bundle: no binaries")
	}
	for _, b := range binaries {
		if err := checkStatic(b); err != nil {
			return fmt.Errorf("plugin bundle: %w", err)
		}
	}
	rootfs := filepath.Join(dir, "rootfs")
	if err := os.RemoveAll(rootfs); err != nil {
		return fmt.Errorf("plugin bundle: removing the old rootfs: %w", err)
	}
	if err := os.MkdirAll(rootfs, 0o755); err != nil {
		return fmt.Errorf("plugin bundle: %w", err)
	}
	for _, b := range binaries {
		if err := copyFile(b, filepath.Join(rootfs, filepath.Base(b)), 0o755); err != nil {
			return fmt.Errorf("plugin bundle: copying %s into the rootfs: %w", b, err)
		}
	}
	buf, err := json.MarshalIndent(Manifest(), "", "  ")
	if err != nil {
		return fmt.Errorf("plugin bundle: encoding config.json: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), append(buf, '\n'), 0o644); err != nil {
		return fmt.Errorf("plugin bundle: writing config.json: %w", err)
	}
	return nil
}

// checkStatic fails unless path is an ELF executable without a program
// interpreter (the dynamic loader).
func checkStatic(path string) error {
	f, err := elf.Open(path)
	if err != nil {
		return fmt.Errorf("%s is not an ELF executable: %w", path, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("%s is dynamically linked; build it with CGO_ENABLED=0 (make build)", path)
		}
	}
	return nil
}

func copyFile(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
