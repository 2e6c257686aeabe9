// Package plugin is meshnet's face towards the Docker engine: the remote NetworkDriver and
// IpamDriver protocol (JSON over HTTP POST on a unix socket), and a watcher of the engine's
// event stream for what that protocol never says — container names, labels and network aliases.
//
// It owns decoding and encoding only. NewHandler turns each engine call into a typed call on a
// NetworkBackend or IPAMBackend (the daemon implements both) and the answer back into the exact
// JSON the engine expects; it holds no IPAM, cluster or dataplane state.
//
// # What it promises
//
//   - Field names as in moby's libnetwork/drivers/remote/api and ipams/remote/api. Network
//     errors carry "Err"; IPAM errors carry "Error" — the IPAM client reads a 200 reply with only
//     "Err" as success and then fails on an empty pool — and also "Err", because error replies
//     are never 200 here and the engine's plugin client reads "Err" from a non-200 body (without
//     it the user reads the raw JSON body as the message). 400 for the caller's fault
//     (RequestError), 404 for unknown calls, 413 for bodies over 1 MiB, 500 otherwise.
//   - Addresses are parsed at the edge: a backend sees netip values or the request fails with 400.
//   - CreateEndpoint: a field the engine already set is never sent back, even unchanged; the
//     engine would fail with "driver modified interface" and roll the endpoint back.
//   - A panic in a backend becomes a 500 reply and a log line; the socket keeps serving.
//   - Serve makes the socket 0600 (root only: it can create networks) without a window of looser
//     permissions, replaces a stale socket, refuses to steal a live one, removes it on exit.
//
// # Why one socket
//
// The engine finds a plugin by socket (legacy: /run/docker/plugins/NAME.sock, managed: the
// config.json "interface.socket"), and one socket may implement several driver types
// (Plugin.Activate lists them). The network driver and the IPAM driver of a meshnet network are
// the same daemon with the same state, so one socket means one name for users
// (-d meshnet --ipam-driver meshnet) and one thing to be up before the engine needs it.
//
// # Why events, and never the Docker API inside a handler
//
// The engine calls the driver while holding its own locks — at container start, and at engine
// start for every container it restarts. A handler that calls back into the engine (to look up
// a container name, say) waits for a lock the engine holds while it waits for the handler:
// the engine deadlocks (projectcalico/libnetwork-plugin#49, devplayer0/docker-net-dhcp#23).
// So handlers answer from local state only, and names, labels and aliases come from the Watcher,
// which reads the event stream and inspects containers outside any handler. The two meet in the
// daemon by endpoint ID: CreateEndpoint's EndpointID is EndpointSettings.EndpointID.
//
// # Why the watcher reports full sets
//
// Every onChange call carries every running container and every network, not a delta. A delta
// stream must be perfect: one event lost while the engine restarts, or a container that died
// before it was inspected, and the consumer is wrong forever. A full set is idempotent, so the
// daemon just reconciles against it, and the watcher itself can recover from anything by
// re-listing: it does so at start, after every reconnection, and every few minutes. It
// subscribes to events before it lists, so nothing falls between the two, coalesces bursts
// (50 ms), and drops a container that 404s or is no longer running when inspected. Membership is
// "running" (paused included); Paused, Running (false while restarting) and Health travel along
// so that the daemon decides what is healthy (ContainerInfo.Healthy is its default rule).
//
// # Engine API versions
//
// Engines refuse API versions outside their range: 20.10 speaks up to 1.41, engine 29
// refuses anything below 1.44. So the client never pins one: like the docker CLI, it asks
// GET /_ping (unversioned, answered by every engine) for the engine's API-Version and speaks
// the lower of that and the newest version it was checked against (apiversion.go says which
// and why). It asks again at every (re)connection of the watcher, since the engine may have
// been upgraded meanwhile, and when a call is refused with "client version ... is too old"
// (or too new), retrying that call once. Watcher.State reports the version in use, whether
// the event stream is followed and why not, for meshctl status.
//
// # IPAM request replay
//
// GetCapabilities answers RequiresRequestReplay=false: meshnet's IPAM persists its allocations
// and survives engine restarts on its own. Replay would re-request every pool and address at
// engine start; as RequestAddress names no endpoint, the IPAM could not tell a replay from a
// second container asking for an address already in use.
package plugin
