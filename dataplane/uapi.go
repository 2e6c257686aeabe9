package dataplane

import (
	"bufio"
	"encoding/hex"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// The embedded wireguard-go device is configured with the text protocol of
// WireGuard's cross-platform UAPI (https://www.wireguard.com/xplatform/),
// through Device.IpcSet and IpcGet, without the UAPI socket: the kernel
// device takes the same configuration as a wgtypes.Config through wgctrl,
// so both backends share one configuration type and one diff.

// uapiSet renders cfg as an IpcSet request. Keys are hex, as the protocol
// wants, not base64.
func uapiSet(cfg wgtypes.Config) string {
	var b strings.Builder
	if cfg.PrivateKey != nil {
		fmt.Fprintf(&b, "private_key=%s\n", hex.EncodeToString(cfg.PrivateKey[:]))
	}
	if cfg.ListenPort != nil {
		fmt.Fprintf(&b, "listen_port=%d\n", *cfg.ListenPort)
	}
	if cfg.ReplacePeers {
		b.WriteString("replace_peers=true\n")
	}
	for _, p := range cfg.Peers {
		fmt.Fprintf(&b, "public_key=%s\n", hex.EncodeToString(p.PublicKey[:]))
		if p.Remove {
			b.WriteString("remove=true\n")
			continue
		}
		if p.UpdateOnly {
			b.WriteString("update_only=true\n")
		}
		if p.Endpoint != nil {
			fmt.Fprintf(&b, "endpoint=%s\n", p.Endpoint.String())
		}
		if p.PersistentKeepaliveInterval != nil {
			fmt.Fprintf(&b, "persistent_keepalive_interval=%d\n", int(p.PersistentKeepaliveInterval.Seconds()))
		}
		if p.ReplaceAllowedIPs {
			b.WriteString("replace_allowed_ips=true\n")
		}
		for _, a := range p.AllowedIPs {
			fmt.Fprintf(&b, "allowed_ip=%s\n", a.String())
		}
	}
	return b.String()
}

// uapiGet parses an IpcGet answer into the device's listen port and peers.
func uapiGet(text string) (port int, peers []wgtypes.Peer, err error) {
	var cur *wgtypes.Peer
	var hsSec, hsNsec int64
	flush := func() {
		if cur != nil {
			if hsSec != 0 || hsNsec != 0 {
				cur.LastHandshakeTime = time.Unix(hsSec, hsNsec)
			}
			peers = append(peers, *cur)
		}
		cur, hsSec, hsNsec = nil, 0, 0
	}
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			return 0, nil, fmt.Errorf("malformed UAPI line %q", line)
		}
		if k == "public_key" {
			flush()
			key, err := hexKey(v)
			if err != nil {
				return 0, nil, err
			}
			cur = &wgtypes.Peer{PublicKey: key}
			continue
		}
		if cur == nil {
			if k == "listen_port" {
				if port, err = strconv.Atoi(v); err != nil {
					return 0, nil, fmt.Errorf("UAPI listen_port %q: %w", v, err)
				}
			}
			continue // private_key, fwmark, errno
		}
		switch k {
		case "endpoint":
			if cur.Endpoint, err = net.ResolveUDPAddr("udp", v); err != nil {
				return 0, nil, fmt.Errorf("UAPI endpoint %q: %w", v, err)
			}
		case "allowed_ip":
			_, n, err := net.ParseCIDR(v)
			if err != nil {
				return 0, nil, fmt.Errorf("UAPI allowed_ip %q: %w", v, err)
			}
			cur.AllowedIPs = append(cur.AllowedIPs, *n)
		case "persistent_keepalive_interval":
			s, err := strconv.Atoi(v)
			if err != nil {
				return 0, nil, fmt.Errorf("UAPI keepalive %q: %w", v, err)
			}
			cur.PersistentKeepaliveInterval = time.Duration(s) * time.Second
		case "last_handshake_time_sec":
			hsSec, _ = strconv.ParseInt(v, 10, 64)
		case "last_handshake_time_nsec":
			hsNsec, _ = strconv.ParseInt(v, 10, 64)
		case "rx_bytes":
			cur.ReceiveBytes, _ = strconv.ParseInt(v, 10, 64)
		case "tx_bytes":
			cur.TransmitBytes, _ = strconv.ParseInt(v, 10, 64)
		}
	}
	flush()
	return port, peers, sc.Err()
}

func hexKey(s string) (wgtypes.Key, error) {
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != wgtypes.KeyLen {
		return wgtypes.Key{}, fmt.Errorf("UAPI key %q is not %d hex bytes", s, wgtypes.KeyLen)
	}
	return wgtypes.NewKey(b)
}
