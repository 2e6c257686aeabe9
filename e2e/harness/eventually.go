package harness

import (
	"context"
	"testing"
	"time"
)

// PollInterval is how often Eventually and Poll try again.
const PollInterval = 200 * time.Millisecond

// Eventually calls fn until it returns nil, and fails the test with fn's last error when
// timeout passes first.
func Eventually(t testing.TB, timeout time.Duration, fn func() error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := Poll(ctx, fn); err != nil {
		t.Fatalf("not true within %s: %v", timeout, err)
	}
}

// Poll calls fn until it returns nil or ctx is done; then it returns fn's last error.
func Poll(ctx context.Context, fn func() error) error {
	for {
		err := fn()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(PollInterval):
		}
	}
}
