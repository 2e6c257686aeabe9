// Package e2e is meshnet's multi-host end-to-end suite: real Docker engines (simulated hosts
// on this machine, or VMs over SSH with MESHNET_E2E_HOSTS), each with its own meshnetd, driven
// with the docker CLI and meshctl exactly as an operator would. The harness lives in
// e2e/harness; the tests are in this package's _test files. See README.md.
//
// The suite needs root for simulated hosts. It never skips silently: without root every test
// fails and says why (MESHNET_E2E_SKIP=1 skips it on purpose).
package e2e
