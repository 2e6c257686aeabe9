package plugin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"runtime/debug"
	"strings"
	"time"
)

// ContentType is the media type of every reply, as Docker's plugin protocol v1.2 names it.
const ContentType = "application/vnd.docker.plugins.v1.2+json"

// MaxBodyBytes bounds a request body; the engine's largest (CreateNetwork) is a few KiB.
const MaxBodyBytes = 1 << 20

// family decides the error field of a reply: the network driver and the plugin handshake read
// "Err", the IPAM driver reads "Error".
type family int

const (
	familyNetwork family = iota
	familyIPAM
)

// call decodes a request body, calls the backend and returns the reply to encode.
type call func(ctx context.Context, body []byte) (any, error)

type route struct {
	family family
	call   call
}

type handler struct {
	net    NetworkBackend
	ipam   IPAMBackend
	log    *slog.Logger
	routes map[string]route
}

// NewHandler serves the NetworkDriver and IpamDriver protocol from nb and ib. Either may be nil:
// its calls then fail with an error. log nil discards.
func NewHandler(nb NetworkBackend, ib IPAMBackend, log *slog.Logger) http.Handler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	h := &handler{net: nb, ipam: ib, log: log}
	ack := func(context.Context, []byte) (any, error) { return struct{}{}, nil }
	h.routes = map[string]route{
		"/Plugin.Activate": {familyNetwork, func(context.Context, []byte) (any, error) {
			return activateReply{Implements: []string{"NetworkDriver", "IpamDriver"}}, nil
		}},

		"/NetworkDriver.GetCapabilities": {familyNetwork, func(context.Context, []byte) (any, error) {
			// Scope local: a global-scope driver sends network creation to Swarm managers.
			return networkCapabilitiesReply{Scope: "local", ConnectivityScope: "global"}, nil
		}},
		"/NetworkDriver.CreateNetwork":    {familyNetwork, h.createNetwork},
		"/NetworkDriver.DeleteNetwork":    {familyNetwork, h.deleteNetwork},
		"/NetworkDriver.CreateEndpoint":   {familyNetwork, h.createEndpoint},
		"/NetworkDriver.EndpointOperInfo": {familyNetwork, h.endpointInfo},
		"/NetworkDriver.DeleteEndpoint":   {familyNetwork, h.deleteEndpoint},
		"/NetworkDriver.Join":             {familyNetwork, h.join},
		"/NetworkDriver.Leave":            {familyNetwork, h.leave},
		// Swarm node discovery: nothing to do for an overlay without Swarm.
		"/NetworkDriver.DiscoverNew":                 {familyNetwork, ack},
		"/NetworkDriver.DiscoverDelete":              {familyNetwork, ack},
		"/NetworkDriver.ProgramExternalConnectivity": {familyNetwork, h.programExternal},
		"/NetworkDriver.RevokeExternalConnectivity":  {familyNetwork, h.revokeExternal},
		"/NetworkDriver.AllocateNetwork":             {familyNetwork, globalScopeOnly},
		"/NetworkDriver.FreeNetwork":                 {familyNetwork, globalScopeOnly},

		"/IpamDriver.GetCapabilities": {familyIPAM, func(context.Context, []byte) (any, error) {
			return ipamCapabilitiesReply{RequiresMACAddress: false, RequiresRequestReplay: requiresRequestReplay}, nil
		}},
		"/IpamDriver.GetDefaultAddressSpaces": {familyIPAM, func(context.Context, []byte) (any, error) {
			return addressSpacesReply{LocalDefaultAddressSpace: LocalAddressSpace, GlobalDefaultAddressSpace: GlobalAddressSpace}, nil
		}},
		"/IpamDriver.RequestPool":    {familyIPAM, h.requestPool},
		"/IpamDriver.ReleasePool":    {familyIPAM, h.releasePool},
		"/IpamDriver.RequestAddress": {familyIPAM, h.requestAddress},
		"/IpamDriver.ReleaseAddress": {familyIPAM, h.releaseAddress},
	}
	return h
}

func globalScopeOnly(context.Context, []byte) (any, error) {
	return nil, BadRequest("meshnet is a local-scope driver: global-scope network allocation (Swarm) is not used")
}

var (
	errNotFound = errors.New("not found")
	errTooLarge = errors.New("request body too large")
)

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	rt, ok := h.routes[r.URL.Path]
	if !ok {
		fam := familyNetwork
		if strings.HasPrefix(r.URL.Path, "/IpamDriver.") {
			fam = familyIPAM
		}
		h.replyError(w, r, fam, fmt.Errorf("%w: meshnet does not implement %q", errNotFound, r.URL.Path), start)
		return
	}
	if r.Method != http.MethodPost {
		h.replyError(w, r, rt.family, BadRequest("method %s not allowed, use POST", r.Method), start)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			err = &RequestError{Err: fmt.Errorf("%w: more than %d bytes", errTooLarge, tooBig.Limit)}
		} else {
			err = BadRequest("reading request: %v", err)
		}
		h.replyError(w, r, rt.family, err, start)
		return
	}
	reply, err := h.invoke(r.Context(), r.URL.Path, rt.call, body)
	if err != nil {
		h.replyError(w, r, rt.family, err, start)
		return
	}
	// Encode before writing anything, so a reply that cannot be encoded still gets a JSON error.
	out, err := json.Marshal(reply)
	if err != nil {
		h.replyError(w, r, rt.family, fmt.Errorf("encoding reply: %w", err), start)
		return
	}
	if h.log.Enabled(r.Context(), slog.LevelDebug) {
		h.log.Debug("plugin call", "path", r.URL.Path, "duration", time.Since(start),
			"request", clip(body), "reply", clip(out))
	}
	writeJSON(w, http.StatusOK, out)
}

// invoke runs one call, turning a panic in it (a backend bug) into an error: one bad request must
// not take down the daemon that serves every container's network.
func (h *handler) invoke(ctx context.Context, path string, c call, body []byte) (reply any, err error) {
	defer func() {
		if p := recover(); p != nil {
			h.log.Error("plugin call panicked", "path", path, "panic", p, "stack", string(debug.Stack()))
			reply, err = nil, fmt.Errorf("internal error in %s: %v", strings.TrimPrefix(path, "/"), p)
		}
	}()
	return c(ctx, body)
}

func (h *handler) replyError(w http.ResponseWriter, r *http.Request, fam family, err error, start time.Time) {
	status := http.StatusInternalServerError
	switch {
	case errors.Is(err, errNotFound):
		status = http.StatusNotFound
	case errors.Is(err, errTooLarge):
		status = http.StatusRequestEntityTooLarge
	case IsBadRequest(err):
		status = http.StatusBadRequest
	}
	level := slog.LevelWarn
	if status == http.StatusInternalServerError {
		level = slog.LevelError
	}
	h.log.Log(r.Context(), level, "plugin call failed", "path", r.URL.Path, "status", status, "duration", time.Since(start), "err", err)

	msg := err.Error()
	var body any = networkErrorReply{Err: msg}
	if fam == familyIPAM {
		body = ipamErrorReply{Error: msg, Err: msg}
	}
	out, _ := json.Marshal(body) // plain strings: cannot fail
	writeJSON(w, status, out)
}

// clip shortens a body for the log.
func clip(b []byte) string {
	const limit = 512
	if len(b) > limit {
		return string(b[:limit]) + "…"
	}
	return string(b)
}

func writeJSON(w http.ResponseWriter, status int, body []byte) {
	w.Header().Set("Content-Type", ContentType)
	w.WriteHeader(status)
	_, _ = w.Write(append(body, '\n'))
}

// --- network driver ---

func (h *handler) netBackend() (NetworkBackend, error) {
	if h.net == nil {
		return nil, errors.New("meshnet serves no network driver here")
	}
	return h.net, nil
}

func (h *handler) ipamBackend() (IPAMBackend, error) {
	if h.ipam == nil {
		return nil, errors.New("meshnet serves no IPAM driver here")
	}
	return h.ipam, nil
}

func (h *handler) createNetwork(ctx context.Context, body []byte) (any, error) {
	var w wireCreateNetwork
	if err := decodeBody(body, &w); err != nil {
		return nil, err
	}
	req, err := w.toRequest()
	if err != nil {
		return nil, err
	}
	nb, err := h.netBackend()
	if err != nil {
		return nil, err
	}
	return struct{}{}, nb.CreateNetwork(ctx, req)
}

func (h *handler) deleteNetwork(ctx context.Context, body []byte) (any, error) {
	var w wireNetworkID
	if err := decodeBody(body, &w); err != nil {
		return nil, err
	}
	if w.NetworkID == "" {
		return nil, BadRequest("DeleteNetwork without NetworkID")
	}
	nb, err := h.netBackend()
	if err != nil {
		return nil, err
	}
	return struct{}{}, nb.DeleteNetwork(ctx, w.NetworkID)
}

// endpointIDs decodes the {NetworkID, EndpointID} body most network calls share.
func endpointIDs(body []byte, op string) (wireEndpointID, error) {
	var w wireEndpointID
	if err := decodeBody(body, &w); err != nil {
		return w, err
	}
	if w.NetworkID == "" || w.EndpointID == "" {
		return w, BadRequest("%s needs NetworkID and EndpointID", op)
	}
	return w, nil
}

func (h *handler) createEndpoint(ctx context.Context, body []byte) (any, error) {
	var w wireCreateEndpoint
	if err := decodeBody(body, &w); err != nil {
		return nil, err
	}
	if w.NetworkID == "" || w.EndpointID == "" {
		return nil, BadRequest("CreateEndpoint needs NetworkID and EndpointID")
	}
	ifc, err := w.Interface.toInterface()
	if err != nil {
		return nil, err
	}
	nb, err := h.netBackend()
	if err != nil {
		return nil, err
	}
	got, err := nb.CreateEndpoint(ctx, CreateEndpointRequest{
		NetworkID: w.NetworkID, EndpointID: w.EndpointID, Interface: ifc, Options: w.Options,
	})
	if err != nil {
		return nil, err
	}
	return createEndpointReply{Interface: onlyNewFields(ifc, got)}, nil
}

func (h *handler) endpointInfo(ctx context.Context, body []byte) (any, error) {
	w, err := endpointIDs(body, "EndpointOperInfo")
	if err != nil {
		return nil, err
	}
	nb, err := h.netBackend()
	if err != nil {
		return nil, err
	}
	v, err := nb.EndpointInfo(ctx, w.NetworkID, w.EndpointID)
	if err != nil {
		return nil, err
	}
	if v == nil {
		v = map[string]any{}
	}
	return endpointInfoReply{Value: v}, nil
}

func (h *handler) deleteEndpoint(ctx context.Context, body []byte) (any, error) {
	w, err := endpointIDs(body, "DeleteEndpoint")
	if err != nil {
		return nil, err
	}
	nb, err := h.netBackend()
	if err != nil {
		return nil, err
	}
	return struct{}{}, nb.DeleteEndpoint(ctx, w.NetworkID, w.EndpointID)
}

func (h *handler) join(ctx context.Context, body []byte) (any, error) {
	var w wireJoin
	if err := decodeBody(body, &w); err != nil {
		return nil, err
	}
	if w.NetworkID == "" || w.EndpointID == "" {
		return nil, BadRequest("Join needs NetworkID and EndpointID")
	}
	nb, err := h.netBackend()
	if err != nil {
		return nil, err
	}
	resp, err := nb.Join(ctx, JoinRequest{
		NetworkID: w.NetworkID, EndpointID: w.EndpointID, SandboxKey: w.SandboxKey, Options: w.Options,
	})
	if err != nil {
		return nil, err
	}
	return toJoinReply(resp)
}

func (h *handler) leave(ctx context.Context, body []byte) (any, error) {
	w, err := endpointIDs(body, "Leave")
	if err != nil {
		return nil, err
	}
	nb, err := h.netBackend()
	if err != nil {
		return nil, err
	}
	return struct{}{}, nb.Leave(ctx, w.NetworkID, w.EndpointID)
}

func (h *handler) programExternal(ctx context.Context, body []byte) (any, error) {
	var w wireExternalConnectivity
	if err := decodeBody(body, &w); err != nil {
		return nil, err
	}
	req, err := toRequest(w)
	if err != nil {
		return nil, err
	}
	nb, err := h.netBackend()
	if err != nil {
		return nil, err
	}
	return struct{}{}, nb.ProgramExternalConnectivity(ctx, req)
}

func (h *handler) revokeExternal(ctx context.Context, body []byte) (any, error) {
	w, err := endpointIDs(body, "RevokeExternalConnectivity")
	if err != nil {
		return nil, err
	}
	nb, err := h.netBackend()
	if err != nil {
		return nil, err
	}
	return struct{}{}, nb.RevokeExternalConnectivity(ctx, w.NetworkID, w.EndpointID)
}

// --- IPAM driver ---

func (h *handler) requestPool(ctx context.Context, body []byte) (any, error) {
	var w wireRequestPool
	if err := decodeBody(body, &w); err != nil {
		return nil, err
	}
	req := PoolRequest{AddressSpace: w.AddressSpace, Options: w.Options, V6: w.V6}
	var err error
	if req.Pool, err = parsePrefix("Pool", w.Pool); err != nil {
		return nil, err
	}
	if req.SubPool, err = parsePrefix("SubPool", w.SubPool); err != nil {
		return nil, err
	}
	ib, err := h.ipamBackend()
	if err != nil {
		return nil, err
	}
	resp, err := ib.RequestPool(ctx, req)
	if err != nil {
		return nil, err
	}
	if resp.PoolID == "" || !resp.Pool.IsValid() {
		return nil, fmt.Errorf("RequestPool reply lacks a pool ID or pool (%q, %s)", resp.PoolID, resp.Pool)
	}
	return requestPoolReply{PoolID: resp.PoolID, Pool: resp.Pool.String(), Data: resp.Data}, nil
}

func (h *handler) releasePool(ctx context.Context, body []byte) (any, error) {
	var w wirePoolID
	if err := decodeBody(body, &w); err != nil {
		return nil, err
	}
	if w.PoolID == "" {
		return nil, BadRequest("ReleasePool without PoolID")
	}
	ib, err := h.ipamBackend()
	if err != nil {
		return nil, err
	}
	return struct{}{}, ib.ReleasePool(ctx, w.PoolID)
}

func (h *handler) requestAddress(ctx context.Context, body []byte) (any, error) {
	var w wireRequestAddress
	if err := decodeBody(body, &w); err != nil {
		return nil, err
	}
	if w.PoolID == "" {
		return nil, BadRequest("RequestAddress without PoolID")
	}
	addr, err := parseAddr("Address", w.Address)
	if err != nil {
		return nil, err
	}
	ib, err := h.ipamBackend()
	if err != nil {
		return nil, err
	}
	resp, err := ib.RequestAddress(ctx, AddressRequest{PoolID: w.PoolID, Address: addr, Options: w.Options})
	if err != nil {
		return nil, err
	}
	// The engine fails an empty address with "no IP returned"; say which side is wrong instead.
	if !resp.Address.IsValid() {
		return nil, errors.New("RequestAddress reply has no address")
	}
	return requestAddressReply{Address: resp.Address.String(), Data: resp.Data}, nil
}

func (h *handler) releaseAddress(ctx context.Context, body []byte) (any, error) {
	var w wireReleaseAddress
	if err := decodeBody(body, &w); err != nil {
		return nil, err
	}
	if w.PoolID == "" || w.Address == "" {
		return nil, BadRequest("ReleaseAddress needs PoolID and Address")
	}
	addr, err := parseAddr("Address", w.Address)
	if err != nil {
		return nil, err
	}
	ib, err := h.ipamBackend()
	if err != nil {
		return nil, err
	}
	return struct{}{}, ib.ReleaseAddress(ctx, w.PoolID, addr)
}
