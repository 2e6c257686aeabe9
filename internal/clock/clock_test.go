package clock

import (
	"testing"
	"time"
)

func recv(c <-chan time.Time) (time.Time, bool) {
	select {
	case t := <-c:
		return t, true
	default:
		return time.Time{}, false
	}
}

func TestFakeTimer(t *testing.T) {
	start := time.Date(2026, 12, 4, 0, 0, 0, 0, time.UTC)
	f := NewFake(start)
	tm := f.NewTimer(time.Second)
	f.Advance(999 * time.Millisecond)
	if _, ok := recv(tm.C()); ok {
		t.Fatal("fired before its deadline")
	}
	f.Advance(time.Millisecond)
	if at, ok := recv(tm.C()); !ok || !at.Equal(start.Add(time.Second)) {
		t.Fatalf("at its deadline: fired %v at %v", ok, at)
	}
	f.Advance(time.Hour)
	if _, ok := recv(tm.C()); ok {
		t.Fatal("a timer fired twice")
	}
	if tm.Stop() {
		t.Error("Stop of a fired timer says it stopped it")
	}
	stopped := f.NewTimer(time.Second)
	if !stopped.Stop() {
		t.Error("Stop of an active timer says it had fired")
	}
	f.Advance(time.Hour)
	if _, ok := recv(stopped.C()); ok {
		t.Fatal("a stopped timer fired")
	}
	if now := f.NewTimer(0); true {
		if _, ok := recv(now.C()); !ok {
			t.Fatal("a timer of 0 is not due at once")
		}
	}
	if n := f.Timers(); n != 0 {
		t.Fatalf("%d timers left active", n)
	}
}

func TestFakeTickerDropsMissedTicks(t *testing.T) {
	start := time.Date(2026, 12, 4, 0, 0, 0, 0, time.UTC)
	f := NewFake(start)
	tk := f.NewTicker(10 * time.Millisecond)
	f.Advance(35 * time.Millisecond) // three ticks due, one kept
	if at, ok := recv(tk.C()); !ok || !at.Equal(start.Add(10*time.Millisecond)) {
		t.Fatalf("first tick %v at %v", ok, at)
	}
	if _, ok := recv(tk.C()); ok {
		t.Fatal("missed ticks were queued")
	}
	f.Advance(5 * time.Millisecond)
	if at, ok := recv(tk.C()); !ok || !at.Equal(start.Add(40*time.Millisecond)) {
		t.Fatalf("next tick %v at %v", ok, at)
	}
	if !f.Now().Equal(start.Add(40 * time.Millisecond)) {
		t.Fatalf("now %v", f.Now())
	}
	tk.Stop()
	f.Advance(time.Second)
	if _, ok := recv(tk.C()); ok {
		t.Fatal("a stopped ticker ticked")
	}
}

// Timers fire in the order of their deadlines, each seeing its own time.
func TestFakeOrder(t *testing.T) {
	start := time.Date(2026, 12, 4, 0, 0, 0, 0, time.UTC)
	f := NewFake(start)
	late, early := f.NewTimer(2*time.Second), f.NewTimer(time.Second)
	f.Advance(3 * time.Second)
	a, _ := recv(early.C())
	b, _ := recv(late.C())
	if !a.Equal(start.Add(time.Second)) || !b.Equal(start.Add(2*time.Second)) {
		t.Fatalf("early at %v, late at %v", a, b)
	}
}
