// Package clock is the time source of the parts of meshnet that wait for
// time to pass (ipam's request timeouts, handoff wait and resync): Real in
// production, Fake in tests, which move it on by hand instead of sleeping.
//
// The interface is the three things such code uses: the current time, a
// one-shot timer and a ticker. Fake keeps the semantics of the time
// package that callers rely on: a timer fires once, a ticker's channel
// holds at most one tick (ticks a slow reader missed are dropped), and
// Stop ends either without draining.
package clock
