// Package daemonflags is meshnetd's command line: every flag with its
// default and help, and the names it is also read under (MESHNET_<FLAG>
// in the environment, <FLAG> as a managed plugin's setting).
//
// It is a package of its own, not part of cmd/meshnetd, so that the
// plugin bundle (internal/pluginbundle) builds its list of settings from
// the same flag set meshnetd parses: a flag added here is settable with
// `docker plugin set` without anyone remembering to add it there, and a
// test in cmd/meshnetd checks that each setting really reaches the Config.
package daemonflags
