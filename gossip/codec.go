package gossip

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// This file is the gossip wire codec: the user messages that carry one
// record and the push/pull state, bounded against what a peer may send.

// Message types on the wire. The first byte of every user message and of
// the push/pull state says what follows, so a foreign or future format is
// rejected rather than misread.
const (
	msgRecord    byte = 'r' // one Record, JSON
	stateVersion byte = 'S' // gzip(JSON([]Record))
)

// Bounds on what a peer can make us decode.
const (
	// maxStateBytes bounds a decompressed push/pull state. Memberlist
	// already caps the compressed state at 20 MiB; JSON records compress
	// about tenfold.
	maxStateBytes = 256 << 20
	// maxStateRecords bounds the records in one state: ten times a
	// thousand hosts with a hundred containers each. Without it, a small
	// state of "{}" repeated would decode to gigabytes of empty Records.
	maxStateRecords = 1 << 20
)

// DecodeMessage decodes one gossip user message.
func DecodeMessage(buf []byte) ([]Record, error) {
	if len(buf) == 0 {
		return nil, errors.New("empty message")
	}
	if buf[0] != msgRecord {
		return nil, fmt.Errorf("unknown message type 0x%02x", buf[0])
	}
	var r Record
	if err := json.Unmarshal(buf[1:], &r); err != nil {
		return nil, fmt.Errorf("decode record message: %w", err)
	}
	return []Record{r}, nil
}

// EncodeState encodes the full state for push/pull.
func EncodeState(recs []Record) ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte(stateVersion)
	zw := gzip.NewWriter(&b)
	if err := json.NewEncoder(zw).Encode(recs); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// DecodeState decodes a peer's push/pull state. What a peer (anyone with
// the key) can make us allocate is bounded: the decompressed bytes by
// maxStateBytes, the records by maxStateRecords, each record's encoding by
// maxStateElement. Records are decoded one at a time, so neither a gzip bomb
// nor a huge list is ever held whole.
func DecodeState(buf []byte) ([]Record, error) {
	return decodeState(buf, maxStateBytes, maxStateRecords)
}

var errStateTooLarge = errors.New("state is too large")

func decodeState(buf []byte, maxBytes int64, maxRecords int) ([]Record, error) {
	if len(buf) == 0 {
		return nil, nil // a peer with nothing to say
	}
	if buf[0] != stateVersion {
		return nil, fmt.Errorf("unknown state format 0x%02x", buf[0])
	}
	zr, err := gzip.NewReader(bytes.NewReader(buf[1:]))
	if err != nil {
		return nil, fmt.Errorf("decode state: %w", err)
	}
	dec := json.NewDecoder(&stateGuard{r: zr, left: maxBytes, limit: maxBytes})
	tok, err := dec.Token()
	if err != nil {
		return nil, fmt.Errorf("decode state: %w", err)
	}
	var recs []Record
	switch tok {
	case nil: // null: an empty state
	case json.Delim('['):
		for dec.More() {
			if len(recs) >= maxRecords {
				return nil, fmt.Errorf("decode state: over %d records: %w", maxRecords, errStateTooLarge)
			}
			var r Record
			if err := dec.Decode(&r); err != nil {
				return nil, fmt.Errorf("decode state: record %d: %w", len(recs), err)
			}
			recs = append(recs, r)
		}
		if _, err := dec.Token(); err != nil { // the closing ]
			return nil, fmt.Errorf("decode state: %w", err)
		}
	default:
		return nil, fmt.Errorf("decode state: want a list of records, got %v", tok)
	}
	// Read to the end: trailing data is an error, and gzip checks its
	// checksum only at EOF.
	if tok, err := dec.Token(); err != io.EOF {
		if err == nil {
			err = fmt.Errorf("trailing data %v", tok)
		}
		return nil, fmt.Errorf("decode state: %w", err)
	}
	return recs, nil
}

// maxStateElement bounds the encoding of one element of the state list,
// with the blanks around it. A valid record is at most maxValueLen plus a
// key of a few hundred bytes (a little more when escaped).
const maxStateElement = 64 << 10

// stateGuard reads a decompressed state and fails once it exceeds limit
// bytes in all, or maxStateElement bytes between two separators of the
// top-level list. The second bound matters because json.Decoder buffers,
// and rescans on every read, a run of blanks before a value: without it a
// state of "[" and a gigabyte of spaces costs quadratic time.
type stateGuard struct {
	r           io.Reader
	left, limit int64

	depth    int  // nesting of [ and { outside strings
	inString bool // inside a JSON string
	escaped  bool // the previous byte in the string was a backslash
	element  int  // bytes since the last separator at depth <= 1
}

func (g *stateGuard) Read(p []byte) (int, error) {
	if g.left <= 0 {
		return 0, fmt.Errorf("over %d bytes decompressed: %w", g.limit, errStateTooLarge)
	}
	if int64(len(p)) > g.left {
		p = p[:g.left]
	}
	n, err := g.r.Read(p)
	g.left -= int64(n)
	for _, c := range p[:n] {
		g.element++
		switch {
		case g.inString:
			switch {
			case g.escaped:
				g.escaped = false
			case c == '\\':
				g.escaped = true
			case c == '"':
				g.inString = false
			}
		case c == '"':
			g.inString = true
		case c == '[' || c == '{':
			g.depth++
			if g.depth == 1 {
				g.element = 0
			}
		case c == ']' || c == '}':
			g.depth--
		case c == ',' && g.depth == 1:
			g.element = 0
		}
		if g.element > maxStateElement {
			return 0, fmt.Errorf("a state element over %d bytes: %w", maxStateElement, errStateTooLarge)
		}
	}
	return n, err
}
