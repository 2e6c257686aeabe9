package plugin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/netip"
	"reflect"
	"slices"
	"strconv"
	"sync"
	"time"
)

// EndpointSettings is a container's attachment to one network, as `docker inspect` shows it.
type EndpointSettings struct {
	NetworkID  string
	EndpointID string // the ID the network driver saw in CreateEndpoint
	IPAddress  netip.Addr
	MacAddress string
	// Aliases are the network aliases (--network-alias, compose service names). The engine
	// adds the container's short ID to them on user-defined networks.
	Aliases []string
}

// ContainerInfo is what the engine knows about a running container and the driver does not:
// its name, labels and aliases. Only running containers (paused ones included) are reported.
type ContainerInfo struct {
	ID     string
	Name   string // without Docker's leading "/"
	Labels map[string]string
	// Running is false while the engine restarts the container (restart policy backoff).
	Running bool
	Paused  bool
	// Health is the healthcheck status: "" (no healthcheck), "starting", "healthy", "unhealthy".
	Health string
	// StopSignal is the signal `docker stop` sends first (the image's STOPSIGNAL; SIGTERM).
	StopSignal int
	// Stopping: the engine sent the container its stop signal (docker stop, restart, a
	// compose update) and it has not died yet. It is still running, finishing what it has;
	// new connections should go elsewhere. Cleared when it dies or starts again, or after
	// stoppingMax if it neither dies nor restarts (a stop signal sent by docker kill to a
	// process that does not exit on it).
	Stopping bool
	// Networks is keyed by network name.
	Networks map[string]EndpointSettings
	// Ports are the container's exposed ports (EXPOSE, --expose, -p).
	Ports []Port
	// SandboxKey is the path of the container's network namespace, as the
	// driver's Join named it; Pid its main process (another way in).
	SandboxKey string
	Pid        int
}

// Port is an exposed port of a container.
type Port struct {
	Proto string // tcp, udp or sctp
	Port  uint16
}

// Healthy reports whether the container should receive traffic: running, not paused, and not
// failing or still starting its healthcheck.
func (c ContainerInfo) Healthy() bool {
	return c.Running && !c.Paused && !c.Stopping && (c.Health == "" || c.Health == "healthy")
}

func (c ContainerInfo) clone() ContainerInfo {
	c.Labels = maps.Clone(c.Labels)
	c.Ports = slices.Clone(c.Ports)
	if c.Networks != nil {
		nets := make(map[string]EndpointSettings, len(c.Networks))
		for k, v := range c.Networks {
			v.Aliases = slices.Clone(v.Aliases)
			nets[k] = v
		}
		c.Networks = nets
	}
	return c
}

// Watcher follows the engine's containers and networks through its event stream.
type Watcher struct {
	client    *dockerClient
	clientErr error
	log       *slog.Logger

	// Tunables; tests shorten them. Not safe to change while Run runs.
	coalesce    time.Duration // events closer than this are handled together
	resync      time.Duration // full re-list even without events: repairs anything missed
	backoffMin  time.Duration
	backoffMax  time.Duration
	eventBuffer int

	strandedDriver string // see RestartStranded

	state engineState
}

// NewWatcher watches the engine at dockerHost ("unix:///var/run/docker.sock"; "" for that
// default). log nil discards.
func NewWatcher(dockerHost string, log *slog.Logger) *Watcher {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c, err := newDockerClient(dockerHost)
	return &Watcher{
		client:      c,
		clientErr:   err,
		log:         log,
		coalesce:    50 * time.Millisecond,
		resync:      5 * time.Minute,
		backoffMin:  250 * time.Millisecond,
		backoffMax:  10 * time.Second,
		eventBuffer: 1024,
	}
}

// Run follows the engine until ctx is done, then returns nil; it returns an error only for a
// docker host it cannot use. onChange gets the full current set of running containers (sorted by
// ID) and all networks (ID → name) after the first listing, after every reconnection, and after
// every batch of events or periodic re-list that changed either. Calls come from Run's goroutine
// one at a time; the arguments are the callee's to keep. While the engine is unreachable Run
// keeps the last state (with live-restore the containers still run) and retries with backoff.
// onChange must not block for long: events queue up meanwhile.
func (w *Watcher) Run(ctx context.Context, onChange func(containers []ContainerInfo, networks map[string]string)) error {
	w.state.start(time.Now())
	if w.clientErr != nil {
		w.state.failed(w.clientErr, time.Now())
		return fmt.Errorf("docker events watcher: %w", w.clientErr)
	}
	defer w.client.close()
	backoff := w.backoffMin
	quiet := false // after the first failure in a row, log retries at debug only
	for {
		listed, err := w.session(ctx, onChange)
		if ctx.Err() != nil {
			return nil
		}
		w.state.failed(err, time.Now())
		if listed {
			backoff, quiet = w.backoffMin, false
		}
		level := slog.LevelWarn
		if quiet {
			level = slog.LevelDebug
		}
		w.log.Log(ctx, level, "docker events: engine unreachable, retrying", "err", err, "in", backoff)
		quiet = true
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		backoff = min(backoff*2, w.backoffMax)
	}
}

// stoppingMax bounds how long a container that got its stop signal counts as stopping.
const stoppingMax = 2 * time.Minute

// watchState is the engine's state as last seen.
type watchState struct {
	containers map[string]ContainerInfo // by ID
	networks   map[string]string        // ID → name
	// stopping: containers sent their stop signal, since when (kept across re-lists: the
	// engine's inspect does not say it).
	stopping map[string]time.Time
}

// pending is what a batch of events made stale.
type pending struct {
	containers map[string]bool // ID → destroyed (no need to inspect)
	networks   bool
	// signals are the signals kill events sent, by container ID (the last one); ended are
	// containers that died or started since: no longer stopping.
	signals map[string]int
	ended   map[string]bool
}

func (p *pending) empty() bool { return len(p.containers) == 0 && !p.networks }

func (p *pending) add(ev dockerEvent) {
	switch ev.Type {
	case "container":
		if ev.Actor.ID == "" {
			return
		}
		p.containers[ev.Actor.ID] = p.containers[ev.Actor.ID] || ev.Action == "destroy"
		switch ev.Action {
		case "kill":
			if sig, err := strconv.Atoi(ev.Actor.Attributes["signal"]); err == nil {
				if p.signals == nil {
					p.signals = map[string]int{}
				}
				p.signals[ev.Actor.ID] = sig
			}
		case "die", "start", "destroy":
			if p.ended == nil {
				p.ended = map[string]bool{}
			}
			p.ended[ev.Actor.ID] = true
			delete(p.signals, ev.Actor.ID)
		}
	case "network":
		switch ev.Action {
		case "create", "destroy":
			p.networks = true
		case "connect", "disconnect":
			if id := ev.Actor.Attributes["container"]; id != "" {
				if _, seen := p.containers[id]; !seen {
					p.containers[id] = false
				}
			}
		}
	}
}

// session subscribes to events, lists everything, then follows events until the stream breaks.
// listed reports whether the full listing succeeded (the backoff restarts then).
func (w *Watcher) session(ctx context.Context, onChange func([]ContainerInfo, map[string]string)) (listed bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait() // runs after cancel: the reader must be gone before Run returns
	defer cancel()

	// Every (re)connection asks the engine its API version again: it may have been
	// upgraded or downgraded while it was away.
	v, err := w.client.negotiate(ctx)
	if err != nil {
		return false, fmt.Errorf("asking the engine its API version: %w", err)
	}
	// Subscribe first, list second: an event between the two is then queued, not lost.
	body, err := w.client.events(ctx)
	if err != nil {
		return false, fmt.Errorf("subscribing to docker events: %w", err)
	}
	events := make(chan dockerEvent, w.eventBuffer)
	streamErr := make(chan error, 1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer body.Close()
		streamErr <- readEvents(ctx, body, events)
	}()

	st, err := w.list(ctx)
	if err != nil {
		return false, fmt.Errorf("listing docker containers: %w", err)
	}
	using, engine := w.client.versions()
	w.log.Info("docker events: following the engine", "containers", len(st.containers), "networks", len(st.networks),
		"api_version", using, "engine_api_version", engine)
	if v.less(mustAPIVersion(minDockerAPIVersion)) {
		w.log.Warn("docker engine older than 20.10 (API "+minDockerAPIVersion+"): not supported; names, services and the leak sweep may be wrong", "engine_api_version", engine)
	}
	w.state.connected(time.Now())
	last := w.emit(st, onChange)
	if w.strandedDriver != "" {
		// In the background: the starts call this daemon's driver, which the
		// engine may reach only after onChange has run.
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.restartStranded(ctx)
		}()
	}

	batch := pending{containers: map[string]bool{}}
	var flush <-chan time.Time
	resync := time.NewTicker(w.resync)
	defer resync.Stop()
	for {
		select {
		case <-ctx.Done():
			return true, ctx.Err()
		case err := <-streamErr:
			return true, err
		case ev := <-events:
			w.log.Debug("docker event", "type", ev.Type, "action", ev.Action, "id", ev.Actor.ID)
			batch.add(ev)
			if flush == nil && !batch.empty() {
				flush = time.After(w.coalesce)
			}
		case <-flush:
			flush = nil
			if err := w.apply(ctx, &st, batch); err != nil {
				return true, err
			}
			batch = pending{containers: map[string]bool{}}
			last = w.emitIfChanged(st, last, onChange)
		case <-resync.C:
			fresh, err := w.list(ctx)
			if err != nil {
				return true, fmt.Errorf("re-listing docker containers: %w", err)
			}
			fresh.stopping = st.stopping
			for id := range fresh.stopping {
				if _, ok := fresh.containers[id]; !ok {
					delete(fresh.stopping, id) // stopped while no event said so
				}
			}
			st = fresh
			last = w.emitIfChanged(st, last, onChange)
		}
	}
}

// readEvents decodes the event stream into out until it ends or ctx is done.
func readEvents(ctx context.Context, body io.Reader, out chan<- dockerEvent) error {
	dec := json.NewDecoder(body)
	for {
		var ev dockerEvent
		if err := dec.Decode(&ev); err != nil {
			if errors.Is(err, io.EOF) {
				return errors.New("docker event stream ended")
			}
			return fmt.Errorf("reading docker events: %w", err)
		}
		select {
		case out <- ev:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// list reads the full state: every running container, inspected, and every network.
func (w *Watcher) list(ctx context.Context) (watchState, error) {
	st := watchState{containers: map[string]ContainerInfo{}}
	ids, err := w.client.runningContainerIDs(ctx)
	if err != nil {
		return st, err
	}
	for _, id := range ids {
		info, ok, err := w.client.inspect(ctx, id)
		if err != nil {
			return st, fmt.Errorf("inspecting container %.12s: %w", id, err)
		}
		if ok { // gone since the listing: leave it out
			st.containers[info.ID] = info
		}
	}
	if st.networks, err = w.client.networks(ctx); err != nil {
		return st, fmt.Errorf("listing docker networks: %w", err)
	}
	return st, nil
}

// apply brings st up to date for one batch of events.
func (w *Watcher) apply(ctx context.Context, st *watchState, batch pending) error {
	if batch.networks {
		nets, err := w.client.networks(ctx)
		if err != nil {
			return fmt.Errorf("listing docker networks: %w", err)
		}
		st.networks = nets
	}
	for _, id := range slices.Sorted(maps.Keys(batch.containers)) {
		if batch.containers[id] { // destroyed
			delete(st.containers, id)
			continue
		}
		info, ok, err := w.client.inspect(ctx, id)
		if err != nil {
			return fmt.Errorf("inspecting container %.12s: %w", id, err)
		}
		if !ok {
			// Gone (404) or stopped before we looked: it must not linger in the set.
			delete(st.containers, id)
			continue
		}
		st.containers[info.ID] = info
	}
	if st.stopping == nil {
		st.stopping = map[string]time.Time{}
	}
	for id := range batch.ended {
		delete(st.stopping, id)
	}
	for id, sig := range batch.signals {
		if c, ok := st.containers[id]; ok && sig == c.StopSignal {
			st.stopping[id] = time.Now()
		}
	}
	return nil
}

// snapshot is what onChange receives, kept to skip calls that would change nothing.
type snapshot struct {
	containers []ContainerInfo
	networks   map[string]string
}

func takeSnapshot(st watchState) snapshot {
	s := snapshot{
		containers: make([]ContainerInfo, 0, len(st.containers)),
		networks:   maps.Clone(st.networks),
	}
	if s.networks == nil {
		s.networks = map[string]string{}
	}
	for _, id := range slices.Sorted(maps.Keys(st.containers)) {
		c := st.containers[id].clone()
		if since, ok := st.stopping[id]; ok && time.Since(since) < stoppingMax {
			c.Stopping = true
		}
		s.containers = append(s.containers, c)
	}
	return s
}

func (w *Watcher) emit(st watchState, onChange func([]ContainerInfo, map[string]string)) snapshot {
	s := takeSnapshot(st)
	w.deliver(s, onChange)
	return s
}

func (w *Watcher) emitIfChanged(st watchState, last snapshot, onChange func([]ContainerInfo, map[string]string)) snapshot {
	s := takeSnapshot(st)
	if reflect.DeepEqual(s, last) {
		return last
	}
	w.deliver(s, onChange)
	return s
}

// deliver hands onChange its own copy, so what it keeps cannot change under it and what it
// changes cannot corrupt the comparison with the next state.
func (w *Watcher) deliver(s snapshot, onChange func([]ContainerInfo, map[string]string)) {
	cs := make([]ContainerInfo, len(s.containers))
	for i, c := range s.containers {
		cs[i] = c.clone()
	}
	onChange(cs, maps.Clone(s.networks))
}
