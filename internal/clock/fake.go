package clock

import (
	"slices"
	"sync"
	"time"
)

// Fake is a clock that moves only when Advance is called. It is safe for
// concurrent use: the code under test reads it and waits on its timers in
// its own goroutines while the test advances it.
type Fake struct {
	mu     sync.Mutex
	now    time.Time
	timers []*fakeTimer // active timers and tickers
}

var _ Clock = (*Fake)(nil)

// NewFake returns a fake clock reading start.
func NewFake(start time.Time) *Fake { return &Fake{now: start} }

// Now returns the fake time.
func (f *Fake) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

// Advance moves the clock on by d, firing every timer and ticker that
// comes due on the way, in the order of their deadlines, each at its own
// deadline's time.
func (f *Fake) Advance(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	end := f.now.Add(d)
	for {
		next := f.nextDueLocked(end)
		if next == nil {
			break
		}
		f.now = next.when
		next.fireLocked(f)
	}
	f.now = end
}

// Timers counts the timers and tickers that have not fired (timers) or
// been stopped: a test can wait until the code under test armed its own.
func (f *Fake) Timers() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.timers)
}

// nextDueLocked returns the active timer with the earliest deadline not
// after end (the first made, among equals), or nil.
func (f *Fake) nextDueLocked(end time.Time) *fakeTimer {
	var best *fakeTimer
	for _, t := range f.timers {
		if t.when.After(end) {
			continue
		}
		if best == nil || t.when.Before(best.when) {
			best = t
		}
	}
	return best
}

func (f *Fake) removeLocked(t *fakeTimer) bool {
	i := slices.Index(f.timers, t)
	if i < 0 {
		return false
	}
	f.timers = slices.Delete(f.timers, i, i+1)
	return true
}

// NewTimer returns a timer that fires once the clock has advanced by d.
func (f *Fake) NewTimer(d time.Duration) Timer {
	return f.add(d, 0)
}

// NewTicker returns a ticker with period d (d must be positive, as for
// time.NewTicker).
func (f *Fake) NewTicker(d time.Duration) Ticker {
	if d <= 0 {
		panic("clock: non-positive interval for NewTicker")
	}
	return fakeTicker{f.add(d, d)}
}

func (f *Fake) add(d, period time.Duration) *fakeTimer {
	f.mu.Lock()
	defer f.mu.Unlock()
	t := &fakeTimer{f: f, c: make(chan time.Time, 1), when: f.now.Add(d), period: period}
	if d <= 0 && period == 0 {
		t.c <- f.now // due already, as time.NewTimer(0) is
		return t
	}
	f.timers = append(f.timers, t)
	return t
}

type fakeTimer struct {
	f      *Fake
	c      chan time.Time
	when   time.Time
	period time.Duration // 0 for a one-shot timer
}

func (t *fakeTimer) fireLocked(f *Fake) {
	select {
	case t.c <- t.when:
	default: // the reader has not taken the last tick: drop this one
	}
	if t.period == 0 {
		f.removeLocked(t)
		return
	}
	t.when = t.when.Add(t.period)
}

func (t *fakeTimer) C() <-chan time.Time { return t.c }

// Stop stops a timer or ticker; it reports whether it was still active.
func (t *fakeTimer) Stop() bool {
	t.f.mu.Lock()
	defer t.f.mu.Unlock()
	return t.f.removeLocked(t)
}

// fakeTicker is a fakeTimer with a period, whose Stop says nothing.
type fakeTicker struct{ *fakeTimer }

func (t fakeTicker) Stop() { t.fakeTimer.Stop() }
