package plugin

import (
	"context"
	"log/slog"
	"net/netip"
	"sync"
)

// fakeBackend records what the handler passed and answers what the test set.
type fakeBackend struct {
	mu    sync.Mutex
	calls []string

	err      error // returned by every method when set
	panicMsg any   // every method panics with it when set

	gotNetwork  CreateNetworkRequest
	gotEndpoint CreateEndpointRequest
	gotJoin     JoinRequest
	gotExternal ExternalConnectivityRequest
	gotPool     PoolRequest
	gotAddress  AddressRequest
	gotIDs      []string // the plain ID arguments of the last call

	endpointReply EndpointInterface
	infoReply     map[string]any
	joinReply     JoinResponse
	poolReply     PoolResponse
	addressReply  AddressResponse
}

var (
	_ NetworkBackend = (*fakeBackend)(nil)
	_ IPAMBackend    = (*fakeBackend)(nil)
)

func newFakeBackend() *fakeBackend {
	return &fakeBackend{
		endpointReply: EndpointInterface{},
		joinReply: JoinResponse{
			InterfaceName: InterfaceName{SrcName: "mn-veth0", DstPrefix: "eth"},
			Gateway:       netip.MustParseAddr("10.42.0.1"),
		},
		poolReply:    PoolResponse{PoolID: "pool-1", Pool: netip.MustParsePrefix("10.42.0.0/16")},
		addressReply: AddressResponse{Address: netip.MustParsePrefix("10.42.0.5/16")},
	}
}

// enter records a call and applies the configured failure.
func (f *fakeBackend) enter(name string, ids ...string) error {
	f.mu.Lock()
	f.calls = append(f.calls, name)
	f.gotIDs = ids
	p, err := f.panicMsg, f.err
	f.mu.Unlock()
	if p != nil {
		panic(p)
	}
	return err
}

func (f *fakeBackend) lastCall() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.calls) == 0 {
		return ""
	}
	return f.calls[len(f.calls)-1]
}

func (f *fakeBackend) CreateNetwork(_ context.Context, req CreateNetworkRequest) error {
	f.mu.Lock()
	f.gotNetwork = req
	f.mu.Unlock()
	return f.enter("CreateNetwork", req.NetworkID)
}

func (f *fakeBackend) DeleteNetwork(_ context.Context, id string) error {
	return f.enter("DeleteNetwork", id)
}

func (f *fakeBackend) CreateEndpoint(_ context.Context, req CreateEndpointRequest) (EndpointInterface, error) {
	f.mu.Lock()
	f.gotEndpoint = req
	f.mu.Unlock()
	if err := f.enter("CreateEndpoint", req.NetworkID, req.EndpointID); err != nil {
		return EndpointInterface{}, err
	}
	return f.endpointReply, nil
}

func (f *fakeBackend) EndpointInfo(_ context.Context, nid, eid string) (map[string]any, error) {
	if err := f.enter("EndpointInfo", nid, eid); err != nil {
		return nil, err
	}
	return f.infoReply, nil
}

func (f *fakeBackend) DeleteEndpoint(_ context.Context, nid, eid string) error {
	return f.enter("DeleteEndpoint", nid, eid)
}

func (f *fakeBackend) Join(_ context.Context, req JoinRequest) (JoinResponse, error) {
	f.mu.Lock()
	f.gotJoin = req
	f.mu.Unlock()
	if err := f.enter("Join", req.NetworkID, req.EndpointID); err != nil {
		return JoinResponse{}, err
	}
	return f.joinReply, nil
}

func (f *fakeBackend) Leave(_ context.Context, nid, eid string) error {
	return f.enter("Leave", nid, eid)
}

func (f *fakeBackend) ProgramExternalConnectivity(_ context.Context, req ExternalConnectivityRequest) error {
	f.mu.Lock()
	f.gotExternal = req
	f.mu.Unlock()
	return f.enter("ProgramExternalConnectivity", req.NetworkID, req.EndpointID)
}

func (f *fakeBackend) RevokeExternalConnectivity(_ context.Context, nid, eid string) error {
	return f.enter("RevokeExternalConnectivity", nid, eid)
}

func (f *fakeBackend) RequestPool(_ context.Context, req PoolRequest) (PoolResponse, error) {
	f.mu.Lock()
	f.gotPool = req
	f.mu.Unlock()
	if err := f.enter("RequestPool"); err != nil {
		return PoolResponse{}, err
	}
	return f.poolReply, nil
}

func (f *fakeBackend) ReleasePool(_ context.Context, poolID string) error {
	return f.enter("ReleasePool", poolID)
}

func (f *fakeBackend) RequestAddress(_ context.Context, req AddressRequest) (AddressResponse, error) {
	f.mu.Lock()
	f.gotAddress = req
	f.mu.Unlock()
	if err := f.enter("RequestAddress", req.PoolID); err != nil {
		return AddressResponse{}, err
	}
	return f.addressReply, nil
}

func (f *fakeBackend) ReleaseAddress(_ context.Context, poolID string, addr netip.Addr) error {
	return f.enter("ReleaseAddress", poolID, addr.String())
}

// recordingLog is a slog handler that keeps messages, to assert on what was logged.
type recordingLog struct {
	mu   sync.Mutex
	msgs []string
}

func (r *recordingLog) Enabled(context.Context, slog.Level) bool { return true }
func (r *recordingLog) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	r.msgs = append(r.msgs, rec.Message)
	r.mu.Unlock()
	return nil
}
func (r *recordingLog) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *recordingLog) WithGroup(string) slog.Handler      { return r }

func (r *recordingLog) count(msg string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, m := range r.msgs {
		if m == msg {
			n++
		}
	}
	return n
}
