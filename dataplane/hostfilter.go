package dataplane

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
)

// The bridge bypass's "auto" mode (doc.go, "The bridge bypass"): frames the
// bypass hands past the bridge skip the host's forward hook, so the bypass
// is on only while the host does no filtering of its own there. This file
// reads that filtering, and watches for it to change.

// BypassMode says when the bridge bypass is on.
type BypassMode string

const (
	// BypassOff keeps every frame on the bridge (the zero value).
	BypassOff BypassMode = "off"
	// BypassOn bypasses the bridge whatever the host's firewall holds.
	BypassOn BypassMode = "on"
	// BypassAuto bypasses it while the host's forward hook holds no
	// filtering but Docker's and meshnet's own (hostForwardFilters), and
	// takes every container back to the bridge when some appears.
	BypassAuto BypassMode = "auto"
)

// ParseBypassMode reads a --bridge-bypass value; true and false are on and
// off (the flag was a switch before it had a mode).
func ParseBypassMode(s string) (BypassMode, error) {
	switch strings.ToLower(s) {
	case "auto":
		return BypassAuto, nil
	case "on", "true":
		return BypassOn, nil
	case "off", "false", "":
		return BypassOff, nil
	}
	return "", fmt.Errorf("%q: choose auto (on while the host's firewall has no forward rules of its own), on or off", s)
}

// BypassStatus is whether the bridge bypass is on and why, for meshctl
// status.
type BypassStatus struct {
	Mode BypassMode
	On   bool
	// Why lists what keeps the bypass off: the host's own forward
	// filtering (auto), why it could not be read, or why the kernel
	// refused the bypass's program.
	Why []string
	// FramesToHosts and FramesToContainers count the frames this run's
	// program handed past the bridge: to a vxlan or the WireGuard device
	// (another host's container) and into a container on this host (from
	// the overlay or from another container here). They start at 0 with
	// each run.
	FramesToHosts, FramesToContainers uint64
}

func (s BypassStatus) String() string {
	switch {
	case s.Mode == BypassAuto && s.On:
		return "on (auto: the host filters no forwarded traffic of its own)"
	case s.On:
		return "on"
	case s.Mode == BypassAuto:
		return "off (auto: " + strings.Join(s.Why, "; ") + ")"
	case len(s.Why) > 0:
		return "off (" + strings.Join(s.Why, "; ") + ")"
	default:
		return "off"
	}
}

// Tables whose forward chains are not the operator's as a whole: Docker's
// iptables-nft filter table (its FORWARD and DOCKER-USER are judged rule by
// rule), Docker's nftables firewall backend, and meshnet's own tables.
var ownForwardTables = map[nftables.TableFamily][]string{
	nftables.TableFamilyIPv4:   {iptFilterTable, "docker-bridges"},
	nftables.TableFamilyINet:   {meshnetTable},
	nftables.TableFamilyBridge: {l2Table},
}

// hostForwardFilters lists the host's own filtering of forwarded IPv4 that
// a bypassed frame would skip, one line each, from every chain of the
// host's nftables (iptables-nft included): rules of the operator's in
// iptables' DOCKER-USER (Docker's own return, on engines that add one, and
// meshnet's commented rules are not the operator's) and in FORWARD itself
// (where ufw hooks its chains; Docker's jumps and per-bridge accepts and
// meshnet's accepts are not the operator's), and base chains at the
// forward hook of the ip, inet and bridge families in tables that are
// neither Docker's nor meshnet's that hold a rule or drop by policy (an
// nftables ruleset of the operator's, firewalld's). IPv6 is never bypassed,
// so ip6 tables do not count. rules lists one chain's rules.
func hostForwardFilters(chains []*nftables.Chain, rules func(*nftables.Chain) ([]*nftables.Rule, error)) ([]string, error) {
	var why []string
	var errs []error
	for _, c := range chains {
		if c.Table == nil {
			continue
		}
		fam := c.Table.Family
		if fam == nftables.TableFamilyIPv4 && c.Table.Name == iptFilterTable && (c.Name == iptDockerUser || c.Name == iptForward) {
			theirs := dockerUserRule
			if c.Name == iptForward {
				theirs = dockerForwardRule
			}
			rs, err := rules(c)
			if err != nil {
				errs = append(errs, fmt.Errorf("list rules of %s: %w", c.Name, err))
				continue
			}
			n := 0
			for _, r := range rs {
				if !theirs(r) {
					n++
				}
			}
			if n > 0 {
				why = append(why, fmt.Sprintf("%s holds %d rule(s) of the operator's", c.Name, n))
			}
			continue
		}
		if c.Hooknum == nil || *c.Hooknum != *nftables.ChainHookForward || !slices.Contains([]nftables.TableFamily{nftables.TableFamilyIPv4, nftables.TableFamilyINet, nftables.TableFamilyBridge}, fam) {
			continue
		}
		if slices.Contains(ownForwardTables[fam], c.Table.Name) {
			continue
		}
		where := fmt.Sprintf("nftables chain %s %s %s at the forward hook", familyName(fam), c.Table.Name, c.Name)
		if c.Policy != nil && *c.Policy == nftables.ChainPolicyDrop {
			why = append(why, where+" drops by policy")
			continue
		}
		rs, err := rules(c)
		if err != nil {
			errs = append(errs, fmt.Errorf("list rules of %s: %w", where, err))
			continue
		}
		if len(rs) > 0 {
			why = append(why, fmt.Sprintf("%s holds %d rule(s)", where, len(rs)))
		}
	}
	return why, errors.Join(errs...)
}

// dockerUserRule: a rule DOCKER-USER holds that is not the operator's:
// Docker's plain "-j RETURN" (engine 20.10 adds it; a counter is all
// iptables-nft puts beside it) or a meshnet rule an older meshnetd left
// (commented; Apply removes it).
func dockerUserRule(r *nftables.Rule) bool {
	if strings.HasPrefix(ruleComment(r.UserData), commentPrefix) {
		return true
	}
	ret := false
	for _, e := range r.Exprs {
		switch e := e.(type) {
		case *expr.Counter:
		case *expr.Verdict:
			if e.Kind != expr.VerdictReturn {
				return false
			}
			ret = true
		default:
			return false
		}
	}
	return ret
}

// dockerForwardRule: a rule of iptables' FORWARD that Docker or meshnet
// wrote: meshnet's (commented), a jump to one of Docker's chains
// (DOCKER-USER, DOCKER-ISOLATION-STAGE-1, DOCKER-FORWARD), or one that
// names only Docker's bridges (engine 20.10's accepts per bridge, "-o
// docker0 -m conntrack ... -j ACCEPT"). Anything else is the operator's or
// another tool's (ufw's jumps to ufw-before-forward, a plain "-s ... -j
// DROP").
func dockerForwardRule(r *nftables.Rule) bool {
	if strings.HasPrefix(ruleComment(r.UserData), commentPrefix) {
		return true
	}
	names, docker := 0, true
	var ifname bool // the previous expression loaded an interface name
	for _, e := range r.Exprs {
		switch e := e.(type) {
		case *expr.Verdict:
			if (e.Kind == expr.VerdictJump || e.Kind == expr.VerdictGoto) && strings.HasPrefix(e.Chain, "DOCKER") {
				return true
			}
		case *expr.Meta:
			ifname = e.Key == expr.MetaKeyIIFNAME || e.Key == expr.MetaKeyOIFNAME
			continue
		case *expr.Cmp:
			if ifname {
				names++
				// iptables-nft writes "-o docker0" with its NUL, "-o br-+"
				// as the prefix alone.
				name, exact := strings.CutSuffix(string(e.Data), "\x00")
				docker = docker && dockerBridgeName(strings.TrimRight(name, "\x00"), !exact)
			}
		}
		ifname = false
	}
	return names > 0 && docker
}

// dockerBridgeName: name (a prefix if wildcard) is one of Docker's
// bridges (dockerBridges).
func dockerBridgeName(name string, wildcard bool) bool {
	for _, p := range dockerBridges {
		if prefix, ok := strings.CutSuffix(p, "*"); ok {
			if strings.HasPrefix(name, prefix) {
				return true
			}
		} else if !wildcard && name == p {
			return true
		}
	}
	return false
}

// readHostFilters reads hostForwardFilters from the kernel through nft,
// adding an iptables-legacy filter table where nftables has no FORWARD
// chain: its rules cannot be read, so it counts as filtering.
func (d *Kernel) readHostFilters(nft *nftables.Conn) ([]string, error) {
	chains, err := nft.ListChains()
	if err != nil {
		return nil, fmt.Errorf("list nftables chains: %w", err)
	}
	why, err := hostForwardFilters(chains, func(c *nftables.Chain) ([]*nftables.Rule, error) {
		return nft.GetRules(c.Table, c)
	})
	if err != nil {
		return nil, err
	}
	if !slices.ContainsFunc(chains, func(c *nftables.Chain) bool {
		return c.Table != nil && c.Table.Family == nftables.TableFamilyIPv4 && c.Table.Name == iptFilterTable && c.Name == iptForward
	}) {
		if d.legacyFilterTable("ip_tables_names") {
			why = append(why, "an iptables-legacy filter table is in use (its rules cannot be read)")
		}
	}
	return why, nil
}

// bypassWantedLocked decides whether this Apply bypasses the bridge, and
// logs when that changes; Apply stores it once the filters are written.
func (d *Kernel) bypassWantedLocked() BypassStatus {
	st := BypassStatus{Mode: d.bypassMode, On: d.bypassMode == BypassOn}
	if d.bypassMode == BypassAuto {
		why, err := d.readHostFilters(d.nft)
		if err != nil {
			why = []string{"the host's firewall could not be read: " + err.Error()}
		}
		st.On, st.Why = len(why) == 0, why
	}
	prev := d.bypassStatus.Load()
	if prev == nil || prev.On != st.On || !slices.Equal(prev.Why, st.Why) {
		if st.On {
			d.log.Info("bridge bypass on", "mode", st.Mode)
		} else if st.Mode == BypassAuto {
			d.log.Info("bridge bypass off: the host filters forwarded traffic of its own, which bypassed frames would skip; every container stays on the bridge",
				"mode", st.Mode, "because", strings.Join(st.Why, "; "))
		}
	}
	return st
}

// BypassStatus says whether the last Apply bypassed the bridge, and why
// not.
func (d *Kernel) BypassStatus() BypassStatus {
	st := BypassStatus{Mode: d.bypassMode, On: d.bypassMode == BypassOn}
	if last := d.bypassStatus.Load(); last != nil {
		st = *last
	}
	if p := d.bypassProg.Load(); p != nil {
		st.FramesToHosts, st.FramesToContainers, _ = p.counts() // closed: none
	}
	return st
}

// WatchHostFilters calls changed when the host's own forward filtering
// (hostForwardFilters) no longer agrees with the bypass the last Apply
// chose: the caller applies again, so an operator's new DOCKER-USER rule
// takes every container back to the bridge within an Apply, not at the
// next periodic one. It follows nftables' change notifications (every
// table, chain and rule change on the host, iptables-nft's included),
// reading the filtering again after each batch, and opens them again a
// second after they fail (a burst can overflow the socket). It returns
// when ctx ends, at once unless the bypass is auto.
func (d *Kernel) WatchHostFilters(ctx context.Context, changed func()) error {
	if d.bypassMode != BypassAuto {
		return nil
	}
	var opts []nftables.ConnOption
	if d.foreignNS {
		opts = append(opts, nftables.WithNetNSFd(int(d.ns)))
	}
	check := func(nft *nftables.Conn) {
		why, err := d.readHostFilters(nft)
		if err != nil {
			why = []string{err.Error()}
		}
		if st := d.bypassStatus.Load(); st != nil && st.On != (len(why) == 0) {
			changed()
		}
	}
	for {
		err := d.watchOnce(ctx, opts, check)
		if ctx.Err() != nil {
			return nil
		}
		d.log.Warn("watching the host's firewall for the bridge bypass: opening again in 1s", "err", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
	}
}

// watchOnce runs one nftables monitor until it fails or ctx ends, calling
// check once at its start (a change may have come while none ran) and
// after every batch of changes.
func (d *Kernel) watchOnce(ctx context.Context, opts []nftables.ConnOption, check func(*nftables.Conn)) error {
	// Two connections: the monitor's socket receives notifications, so
	// reads need their own. The monitor's is lasting so that it can be
	// closed whatever ended the monitor (its own Close does not close it
	// after a receive error).
	nft, err := nftables.New(opts...)
	if err != nil {
		return fmt.Errorf("open nftables connection: %w", err)
	}
	monConn, err := nftables.New(append(slices.Clip(opts), nftables.AsLasting())...)
	if err != nil {
		return fmt.Errorf("open nftables connection: %w", err)
	}
	defer monConn.CloseLasting()
	// Every object: a batch ends with its generation message, which only
	// the catch-all subscription delivers.
	events, err := monConn.AddGenerationalMonitor(nftables.NewMonitor())
	if err != nil {
		return fmt.Errorf("listen to nftables changes: %w", err)
	}
	stop := context.AfterFunc(ctx, func() { _ = monConn.CloseLasting() })
	defer stop()
	check(nft)
	for ev := range events {
		if ev.GeneratedBy != nil && ev.GeneratedBy.Type == nftables.MonitorEventTypeOOB {
			return fmt.Errorf("nftables notifications: %w", ev.GeneratedBy.Error)
		}
		check(nft)
	}
	return errors.New("nftables notifications ended")
}
