// Package control is meshnetd's local control API: HTTP+JSON on a unix
// socket that only root can open (mode 0600), served by the daemon and read
// by meshctl.
//
// The wire types live here, with the client and the HTTP routing, so that
// the daemon and meshctl cannot drift apart: the daemon implements Backend
// (and KeyBackend, for meshctl keys at /v1/keys), meshctl uses Client. JSON
// field names are a public contract (meshctl -o json is scripted against):
// add fields, never rename or remove them.
//
// Requests are bounded: bodies of at most 64 KiB holding exactly one JSON
// object with known fields, and server timeouts that cut off slow clients.
package control
