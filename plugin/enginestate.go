package plugin

import (
	"sync"
	"time"
)

// EngineState is how the watcher stands with the engine, for meshctl status.
type EngineState struct {
	// Connected: the watcher follows the event stream and its last listing succeeded.
	Connected bool
	// Since is when Connected last changed (or when Run started, before any connection).
	// Zero before Run.
	Since time.Time
	// APIVersion is the Engine API version in use ("1.52"), "" before the first
	// negotiation; EngineAPIVersion is the newest the engine said it speaks.
	APIVersion       string
	EngineAPIVersion string
	// LastError is why the last connection failed or ended, at LastErrorAt.
	LastError   string
	LastErrorAt time.Time
}

// State returns how the watcher stands with the engine. Safe to call at any time.
func (w *Watcher) State() EngineState {
	st := w.state.get()
	if w.client != nil {
		st.APIVersion, st.EngineAPIVersion = w.client.versions()
	}
	return st
}

// engineState is EngineState under its lock, written by Run's goroutine.
type engineState struct {
	mu sync.Mutex
	st EngineState
}

func (s *engineState) get() EngineState {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.st
}

func (s *engineState) start(now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.st.Connected, s.st.Since = false, now
}

func (s *engineState) connected(now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.st.Connected, s.st.Since = true, now
}

// failed records err; a connection it ends is lost from now.
func (s *engineState) failed(err error, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.st.Connected {
		s.st.Connected, s.st.Since = false, now
	}
	if err != nil {
		s.st.LastError, s.st.LastErrorAt = err.Error(), now
	}
}
