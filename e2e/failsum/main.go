// Command failsum reads the output of `go test -v` on stdin, passes it through unchanged, and
// ends it with a short summary of every failed test: its last own log lines, without the
// harness's per-host failure dump. A failing run's dump is thousands of lines long and buries
// the test's own error message; CI logs are often read only at their head and tail, so the
// summary puts each failure's reason at the tail.
//
// Usage: go test -v ./e2e/... 2>&1 | go run ./e2e/failsum
// The exit status is always 0: the caller takes go test's own (set -o pipefail).
package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
)

func main() {
	s := newSummary()
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 16<<20)
	out := bufio.NewWriter(os.Stdout)
	for in.Scan() {
		line := in.Text()
		fmt.Fprintln(out, line)
		out.Flush() // live output: the suite runs for twenty minutes
		s.add(line)
	}
	if err := in.Err(); err != nil {
		fmt.Fprintf(out, "failsum: reading the test output: %v\n", err)
	}
	s.write(out)
	out.Flush()
}

// write prints the summary, or nothing when no test failed.
func (s *summary) write(w io.Writer) {
	if len(s.failed) == 0 {
		return
	}
	fmt.Fprintf(w, "\n===== %d failed test(s); the last lines each logged (host dumps left out):\n", len(s.failed))
	for _, name := range s.failed {
		fmt.Fprintf(w, "--- FAIL: %s\n", name)
		for _, l := range s.tail(name) {
			fmt.Fprintln(w, l)
		}
	}
}
