package main

import (
	"regexp"
	"strings"
)

// tailLines is how many of a failed test's own log lines the summary keeps.
const tailLines = 12

// entryLines is how many lines of one multi-line log entry the summary keeps.
const entryLines = 4

var (
	runLine  = regexp.MustCompile(`^=== (?:RUN|CONT|PAUSE|NAME)\s+(\S+)`)
	failLine = regexp.MustCompile(`^\s*--- FAIL: (\S+)`)
	// A log entry of t.Log: indented, "file.go:line: text".
	entryStart = regexp.MustCompile(`^\s+([\w.-]+\.go):\d+: `)
)

// summary follows `go test -v` output: which test each log line belongs to, and which failed.
type summary struct {
	current string
	lines   map[string][]string // per test, its log lines outside dumps
	inDump  bool                // the current log entry is the harness's host dump
	kept    int                 // lines kept of the current log entry
	failed  []string
}

func newSummary() *summary { return &summary{lines: map[string][]string{}} }

func (s *summary) add(line string) {
	if m := runLine.FindStringSubmatch(line); m != nil {
		s.current, s.inDump = m[1], false
		return
	}
	if m := failLine.FindStringSubmatch(line); m != nil {
		s.failed = append(s.failed, m[1])
		s.inDump = false
		return
	}
	if s.current == "" || strings.HasPrefix(line, "--- ") || strings.HasPrefix(line, "=== ") {
		return
	}
	if m := entryStart.FindStringSubmatch(line); m != nil {
		s.inDump, s.kept = m[1] == "dump.go", 0
	} else if !strings.HasPrefix(line, "    ") {
		return // not a test's log line (a daemon's stderr, go test's own lines)
	}
	if s.inDump {
		return
	}
	s.kept++
	if s.kept > entryLines {
		if s.kept == entryLines+1 {
			s.lines[s.current] = append(s.lines[s.current], "        […]")
		}
		return
	}
	l := append(s.lines[s.current], line)
	if len(l) > 4*tailLines {
		l = append(l[:0:0], l[len(l)-tailLines:]...)
	}
	s.lines[s.current] = l
}

// tail returns the last log lines of test name.
func (s *summary) tail(name string) []string {
	l := s.lines[name]
	if len(l) > tailLines {
		l = l[len(l)-tailLines:]
	}
	return l
}
