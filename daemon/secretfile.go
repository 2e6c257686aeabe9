package daemon

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/meshnet/meshnet/internal/atomicfile"
)

// secretFile returns the one-line secret kept in path, making it with
// generate and saving it (mode 0600, atomically) when the file does not
// exist yet. A file readable by others is narrowed to 0600, and said so.
// what names the secret in errors and logs ("node key").
func secretFile(path, what string, generate func() (string, error), log *slog.Logger) (text string, created bool, err error) {
	buf, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		text, err := generate()
		if err != nil {
			return "", false, fmt.Errorf("generate %s: %w", what, err)
		}
		if err := atomicfile.Write(path, []byte(text+"\n"), 0o600); err != nil {
			return "", false, fmt.Errorf("save %s: %w", what, err)
		}
		return text, true, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("read %s: %w", what, err)
	}
	if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o077 != 0 {
		if err := os.Chmod(path, 0o600); err != nil {
			return "", false, fmt.Errorf("restrict %s file %s to mode 0600: %w", what, path, err)
		}
		log.Warn(what+" file was readable by others; now mode 0600", "file", path, "was", fi.Mode().Perm().String())
	}
	return strings.TrimSpace(string(buf)), false, nil
}
