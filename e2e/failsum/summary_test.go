package main

import (
	"bytes"
	"strings"
	"testing"
)

const sample = `=== RUN   TestA
    a_test.go:10: all 3 hosts alive
--- PASS: TestA (1.00s)
=== RUN   TestB
    b_test.go:20: started
    b_test.go:30: the control's packets reached the target 0 times, want 20
    dump.go:62: 
        ===== host1 (198.18.0.11) =====
        ----- meshnetd log
        lots of lines
time=2026 level=INFO msg="reset: restarting meshnetd"
--- FAIL: TestB (22.84s)
=== RUN   TestC
=== RUN   TestC/sub
    c_test.go:5: sub failed: one
        two
        three
        four
        five
        six
--- FAIL: TestC (0.10s)
    --- FAIL: TestC/sub (0.05s)
FAIL
`

func TestSummary(t *testing.T) {
	s := newSummary()
	for _, l := range strings.Split(sample, "\n") {
		s.add(l)
	}
	var b bytes.Buffer
	s.write(&b)
	got := b.String()
	for _, want := range []string{
		"3 failed test(s)",
		"--- FAIL: TestB\n    b_test.go:20: started\n    b_test.go:30: the control's packets reached the target 0 times, want 20\n--- FAIL: TestC",
		"    c_test.go:5: sub failed: one\n        two\n        three\n        four\n        […]\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("summary lacks %q:\n%s", want, got)
		}
	}
	for _, bad := range []string{"host1", "lots of lines", "five", "reset:", "TestA"} {
		if strings.Contains(got, bad) {
			t.Errorf("summary holds %q:\n%s", bad, got)
		}
	}
}

func TestSummaryNothingFailed(t *testing.T) {
	s := newSummary()
	s.add("=== RUN   TestA")
	s.add("--- PASS: TestA (1.00s)")
	var b bytes.Buffer
	s.write(&b)
	if b.Len() != 0 {
		t.Errorf("summary of a green run: %q", b.String())
	}
}
