package gossip

import (
	"bytes"
	"compress/gzip"
	"errors"
	"runtime"
	"strings"
	"testing"
)

func gzipped(t testing.TB, payload []byte) []byte {
	t.Helper()
	var b bytes.Buffer
	b.WriteByte(stateVersion)
	zw, _ := gzip.NewWriterLevel(&b, gzip.BestCompression)
	if _, err := zw.Write(payload); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// gzipBomb builds a state whose gzip members (concatenated, which gzip
// readers decode as one stream) expand to prefix + about size bytes of
// filler. Building it costs one 1 MiB compression, whatever the size.
func gzipBomb(t testing.TB, prefix string, filler byte, size int) []byte {
	t.Helper()
	var b bytes.Buffer
	b.WriteByte(stateVersion)
	member := func(p []byte) {
		zw, _ := gzip.NewWriterLevel(&b, gzip.BestCompression)
		zw.Write(p)
		zw.Close()
	}
	member([]byte(prefix))
	start := b.Len()
	member(bytes.Repeat([]byte{filler}, 1<<20))
	one := append([]byte(nil), b.Bytes()[start:]...)
	for n := 1 << 20; n < size; n += 1 << 20 {
		b.Write(one)
	}
	return b.Bytes()
}

func sampleRecords(t testing.TB) []Record {
	return []Record{
		{Key: Key{Kind: KindNode, Owner: "a"}, Version: 10, Value: rawJSON(t, NodeInfo{Addr: "198.18.0.11"})},
		{Key: Key{Kind: kindTest, Owner: "b", ID: "ep1"}, Version: 11, Value: rawJSON(t, EndpointInfo{Addr: "10.42.0.2"})},
		{Key: Key{Kind: kindTest, Owner: "b", ID: "ep2"}, Version: 12, Deleted: true},
	}
}

func TestStateRoundTrip(t *testing.T) {
	for name, recs := range map[string][]Record{"records": sampleRecords(t), "empty": {}, "nil": nil} {
		buf, err := EncodeState(recs)
		if err != nil {
			t.Fatal(err)
		}
		got, err := DecodeState(buf)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !sameRecords(got, recs) {
			t.Errorf("%s: round trip gave\n%swant\n%s", name, formatRecords(got), formatRecords(recs))
		}
	}
	if recs, err := DecodeState(nil); err != nil || recs != nil {
		t.Errorf("empty state: %v, %v", recs, err)
	}
}

func TestDecodeStateRejectsMalformed(t *testing.T) {
	good, err := EncodeState(sampleRecords(t))
	if err != nil {
		t.Fatal(err)
	}
	badCRC := append([]byte(nil), good...)
	badCRC[len(badCRC)-5] ^= 0xff // the CRC-32 in the gzip trailer
	cases := map[string][]byte{
		"foreign format":  append([]byte{'X'}, good[1:]...),
		"not gzip":        []byte("Snot gzip at all"),
		"truncated":       good[:len(good)-10],
		"bad checksum":    badCRC,
		"not JSON":        gzipped(t, []byte("\x00\x01\x02")),
		"an object":       gzipped(t, []byte(`{"kind":"node"}`)),
		"a number":        gzipped(t, []byte(`42`)),
		"trailing data":   gzipped(t, []byte(`[] []`)),
		"unclosed list":   gzipped(t, []byte(`[{"kind":"node","owner":"a","version":1}`)),
		"wrong field":     gzipped(t, []byte(`[{"kind":7}]`)),
		"deep nesting":    gzipped(t, []byte(strings.Repeat("[", 100000))),
		"only the marker": {stateVersion},
	}
	for name, buf := range cases {
		if recs, err := DecodeState(buf); err == nil {
			t.Errorf("%s: decoded %v", name, recs)
		}
	}
}

// A gzip bomb is refused without holding the expanded bytes: decoding
// streams, so memory stays small whatever the bomb expands to.
func TestDecodeStateRefusesGzipBomb(t *testing.T) {
	for name, bomb := range map[string][]byte{
		"blanks in a list": gzipBomb(t, "[", ' ', maxStateBytes+(2<<20)),
		"blanks first":     gzipBomb(t, "", '\n', maxStateBytes+(2<<20)),
		"a huge string":    gzipBomb(t, `["`, 'a', 64<<20),
		"zeros":            gzipBomb(t, "", 0, 64<<20),
	} {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		recs, err := DecodeState(bomb)
		runtime.ReadMemStats(&after)
		if err == nil {
			t.Errorf("%s: bomb of %d bytes decoded to %d records", name, len(bomb), len(recs))
		}
		if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 16<<20 {
			t.Errorf("%s: refusing the bomb allocated %d MiB", name, alloc>>20)
		}
	}
}

func TestDecodeStateAllowsBlanksInStrings(t *testing.T) {
	r := Record{Key: Key{Kind: kindTest, Owner: "a", ID: strings.Repeat(" ", maxIDLen)}, Version: 1,
		Value: rawJSON(t, strings.Repeat(" ", maxValueLen-2))}
	buf, err := EncodeState([]Record{r, r, r})
	if err != nil {
		t.Fatal(err)
	}
	if recs, err := DecodeState(buf); err != nil || len(recs) != 3 || !sameRecord(recs[2], r) {
		t.Errorf("records with blanks in strings: %d, %v", len(recs), err)
	}
	// Escapes inside strings do not end them early.
	tricky := gzipped(t, []byte(`[{"kind":"node","owner":"a\\\"[{","id":"]}\\","version":1}]`))
	if recs, err := DecodeState(tricky); err != nil || len(recs) != 1 || recs[0].Owner != `a\"[{` {
		t.Errorf("escaped quotes and brackets in strings: %+v, %v", recs, err)
	}
}

func TestDecodeStateBoundsRecordCount(t *testing.T) {
	// 2000 empty records compress to almost nothing; each would be a
	// Record in memory.
	buf := gzipped(t, []byte("["+strings.Repeat("{},", 1999)+"{}]"))
	if _, err := decodeState(buf, maxStateBytes, 1000); !errors.Is(err, errStateTooLarge) {
		t.Errorf("2000 records with a limit of 1000: %v", err)
	}
	recs, err := decodeState(buf, maxStateBytes, 2000)
	if err != nil || len(recs) != 2000 {
		t.Errorf("2000 records with a limit of 2000: %d, %v", len(recs), err)
	}
	// And the byte bound holds for valid JSON too.
	if _, err := decodeState(buf, 100, 1<<20); !errors.Is(err, errStateTooLarge) {
		t.Errorf("6000 bytes with a limit of 100: %v", err)
	}
}

func TestDecodeMessage(t *testing.T) {
	r := sampleRecords(t)[1]
	buf := append([]byte{msgRecord}, rawJSON(t, r)...)
	got, err := DecodeMessage(buf)
	if err != nil || len(got) != 1 || !sameRecord(got[0], r) {
		t.Fatalf("DecodeMessage = %v, %v", got, err)
	}
	// The decoded record must not alias memberlist's buffer, which it
	// reuses after NotifyMsg returns.
	for i := range buf {
		buf[i] = 'x'
	}
	if !sameRecord(got[0], r) {
		t.Error("decoded record aliases the message buffer")
	}
	for name, bad := range map[string][]byte{
		"empty":        nil,
		"unknown type": append([]byte{'?'}, rawJSON(t, r)...),
		"truncated":    append([]byte{msgRecord}, rawJSON(t, r)[:10]...),
		"only type":    {msgRecord},
		"a list":       append([]byte{msgRecord}, rawJSON(t, []Record{r})...),
	} {
		if got, err := DecodeMessage(bad); err == nil {
			t.Errorf("%s: decoded %v", name, got)
		}
	}
}

// FuzzDecodeState: no input panics, none decodes to more than the bounds,
// and whatever decodes re-encodes to the same records.
func FuzzDecodeState(f *testing.F) {
	good, _ := EncodeState(sampleRecords(f))
	f.Add(good)
	f.Add(good[:len(good)/2])
	f.Add([]byte{})
	f.Add([]byte{stateVersion})
	f.Add(gzipped(f, []byte(`null`)))
	f.Add(gzipped(f, []byte(`[{},{"version":1}]`)))
	f.Add(gzipBomb(f, "[", ' ', 4<<20))
	f.Fuzz(func(t *testing.T, buf []byte) {
		recs, err := DecodeState(buf)
		if err != nil {
			return
		}
		if len(recs) > maxStateRecords {
			t.Fatalf("decoded %d records", len(recs))
		}
		again, err := EncodeState(recs)
		if err != nil {
			t.Fatalf("re-encoding decoded records: %v", err)
		}
		back, err := DecodeState(again)
		if err != nil {
			t.Fatalf("decoding re-encoded records: %v", err)
		}
		if len(back) != len(recs) {
			t.Fatalf("round trip: %d records, then %d", len(recs), len(back))
		}
		for i := range back {
			if back[i].Key != recs[i].Key || back[i].Version != recs[i].Version || back[i].Deleted != recs[i].Deleted {
				t.Fatalf("round trip changed %+v to %+v", recs[i], back[i])
			}
		}
	})
}

// FuzzDecodeMessage: no input panics; a decoded message is one record that
// the store either merges or rejects.
func FuzzDecodeMessage(f *testing.F) {
	for _, r := range sampleRecords(f) {
		f.Add(append([]byte{msgRecord}, rawJSON(f, r)...))
	}
	f.Add([]byte{})
	f.Add([]byte{msgRecord})
	f.Add([]byte(`r{"kind":"node","owner":"a","version":18446744073709551615,"value":{"a":[1,2,{}]}}`))
	f.Add([]byte(`r{"kind":"","owner":"","version":0,"deleted":true,"value":"\u0000"}`))
	f.Fuzz(func(t *testing.T, buf []byte) {
		recs, err := DecodeMessage(buf)
		if err != nil {
			return
		}
		if len(recs) != 1 {
			t.Fatalf("decoded %d records from one message", len(recs))
		}
		s := NewStore(StoreConfig{Self: "fuzz"})
		changed, err := s.Merge(recs)
		// Merge refuses more than validate does (values, signatures,
		// versions ahead of the clock), never less.
		if err == nil && recs[0].validate() != nil {
			t.Fatalf("merge took a record validate refuses: %v", recs[0].validate())
		}
		if err == nil && len(changed) != 1 {
			t.Fatalf("a valid new record did not change an empty store")
		}
		if err != nil && len(s.All()) != 0 {
			t.Fatalf("an invalid record was stored")
		}
	})
}
