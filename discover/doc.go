// Package discover turns meshnetd's --join list into gossip seed addresses,
// on every join attempt. It owns the three forms a seed may take:
//
//   - an address, IP or IP:port, used as it is;
//   - a host name, name or name:port, resolved to every address it has (a
//     DNS name with one A record per seed host is the simplest way to hand
//     an autoscaling group its seeds);
//   - a cloud discovery query in go-discover's form, as Consul's retry_join
//     takes it: "provider=aws tag_key=meshnet tag_value=prod" (also
//     "provider=gce tag_value=meshnet"), answered by the cloud's API with the
//     addresses of the matching instances.
//
// # What it promises
//
// Nothing is cached: names and queries are expanded again on every attempt,
// because the addresses behind them change (hosts are replaced, a seed comes
// up after this one). One entry that fails does not hide the others: Seeds
// returns what it found with an error naming what it could not expand, and
// the gossip layer retries until one seed answers. Every address comes out as
// IP:port, so the gossip layer can tell a seed that is already a member.
//
// # Why it is shaped so
//
// Provider is go-discover's own provider interface, restated here so that
// only the providers meshnet links (AWS and GCE, see providers.go) are
// compiled in: go-discover's root package imports all fourteen of its
// providers and their cloud SDKs. Tests give the Resolver a fake provider and
// a fake host lookup, so the wiring is tested without a cloud or a DNS
// server. The query syntax is go-discover's ("key=value" pairs separated by
// spaces, values in double quotes when they hold spaces), parsed here for the
// same reason.
package discover
