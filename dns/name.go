package dns

import (
	"strings"
	"unicode/utf8"

	"github.com/miekg/dns"
)

// maxLabel is the longest DNS label in octets (RFC 1035 §2.3.4).
const maxLabel = 63

// Label turns a Docker name (container, service, network or alias) into one
// DNS label: a leading '/' (as Docker reports container names) is dropped,
// letters are lower-cased, every character that is not a letter, digit or
// '-' becomes '-' (so "my_app.1" is "my-app-1": Docker allows '_' and '.' in
// names, DNS does not inside one label), leading and trailing '-' are
// trimmed and the result is cut to 63 octets. It returns "" when nothing
// usable is left; such names are not published.
//
// Two Docker names may map to the same label (say "a_b" and "a.b"); their
// addresses are then answered together, which is what a round-robin name
// does anyway.
func Label(name string) string {
	name = strings.TrimPrefix(name, "/")
	var b strings.Builder
	b.Grow(len(name))
	for _, r := range name {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '-':
			b.WriteRune(r)
		case r >= 'A' && r <= 'Z':
			b.WriteRune(r + ('a' - 'A'))
		default:
			// One '-' per character, whatever its width in UTF-8.
			b.WriteByte('-')
		}
	}
	l := strings.Trim(b.String(), "-")
	if len(l) > maxLabel {
		l = strings.TrimRight(l[:maxLabel], "-")
	}
	return l
}

// ServiceName turns a service name into one or more labels: each
// dot-separated part goes through Label, so "web.shop" (a compose service
// qualified by its project) is answered as web.shop.<domain>, while a
// single-part name is exactly its Label.
func ServiceName(name string) string {
	var labels []string
	for _, l := range strings.Split(name, ".") {
		if l = Label(l); l != "" {
			labels = append(labels, l)
		}
	}
	return strings.Join(labels, ".")
}

// zoneName normalises a domain ("meshnet", "Cluster.Local.") to a
// lower-case FQDN ("meshnet.", "cluster.local."), each label passed through
// Label. An empty or unusable domain becomes DefaultDomain.
func zoneName(domain string) string {
	var labels []string
	for _, l := range strings.Split(domain, ".") {
		if l = Label(l); l != "" {
			labels = append(labels, l)
		}
	}
	z := strings.Join(labels, ".") + "."
	if len(labels) == 0 || !isName(z) {
		return DefaultDomain + "."
	}
	return z
}

// isName reports whether s is a presentable FQDN that packs (labels ≤ 63
// octets, name ≤ 255 octets on the wire).
func isName(s string) bool {
	_, ok := dns.IsDomainName(s)
	return ok && utf8.ValidString(s)
}

// inZone reports whether the lower-case FQDN name is zone or below it.
func inZone(name, zone string) bool {
	if len(name) == len(zone) {
		return name == zone
	}
	return len(name) > len(zone) && name[len(name)-len(zone)-1] == '.' &&
		name[len(name)-len(zone):] == zone
}

// lowerASCII lower-cases A-Z only, without allocating when there is
// nothing to change (the common case: resolvers send lower case, except
// those using 0x20 randomisation).
func lowerASCII(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= 'A' && c <= 'Z' {
			b := []byte(s)
			for j := i; j < len(b); j++ {
				if c := b[j]; c >= 'A' && c <= 'Z' {
					b[j] = c + ('a' - 'A')
				}
			}
			return string(b)
		}
	}
	return s
}
