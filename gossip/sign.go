package gossip

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/binary"
	"fmt"
)

// Records are signed by their writer (doc.go, "Records bound to their
// owner"). The signature covers everything that decides what a record
// means and which copy wins: kind, owner, ID, version, the deletion flag
// and the value bytes exactly as they travel. It does not cover Signer:
// the key is checked against the name's pinned key instead (trust.go).

// signContext opens every signed message, so that a signature over a
// record can never be taken for one over anything else a node key signs.
const signContext = "meshnet record v1\x00"

// signedBytes is the canonical encoding a record's signature covers:
// length-prefixed strings, the version big-endian, one byte for the
// deletion flag, then the length-prefixed value. Lengths make it
// unambiguous (no "ab"+"c" = "a"+"bc"); the value is signed as raw bytes,
// which JSON keeps unchanged from writer to reader (values are written by
// json.Marshal, compact and escaped, and RawMessage carries them as is).
func signedBytes(r Record) []byte {
	b := make([]byte, 0, len(signContext)+3*4+len(r.Kind)+len(r.Owner)+len(r.ID)+8+1+len(r.Value))
	b = append(b, signContext...)
	for _, s := range []string{string(r.Kind), r.Owner, r.ID} {
		b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
		b = append(b, s...)
	}
	b = binary.BigEndian.AppendUint64(b, r.Version)
	if r.Deleted {
		b = append(b, 1)
	} else {
		b = append(b, 0)
	}
	b = binary.BigEndian.AppendUint32(b, uint32(len(r.Value)))
	return append(b, r.Value...)
}

// Sign returns r signed with key, as a node signs what it writes (the
// store does it for Put and Delete; tools and tests that build records by
// hand use this). The record must be final: any later change to what the
// signature covers invalidates it.
func Sign(r Record, key ed25519.PrivateKey) Record { return sign(r, key) }

func sign(r Record, key ed25519.PrivateKey) Record {
	r.Signer = append([]byte(nil), key.Public().(ed25519.PublicKey)...)
	r.Sig = ed25519.Sign(key, signedBytes(r))
	return r
}

// verifySig reports whether a signed record's signature is good for its
// Signer. It says nothing of whether Signer may write for the owner.
func verifySig(r Record) bool {
	return len(r.Signer) == ed25519.PublicKeySize && len(r.Sig) == ed25519.SignatureSize &&
		ed25519.Verify(ed25519.PublicKey(r.Signer), signedBytes(r), r.Sig)
}

// EncodeNodeKey is how a node's public key is written in its NodeInfo.
func EncodeNodeKey(pub ed25519.PublicKey) string {
	return base64.StdEncoding.EncodeToString(pub)
}

// decodeNodeKey parses NodeInfo.NodeKey.
func decodeNodeKey(s string) (ed25519.PublicKey, error) {
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil || len(b) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("node key %q: not a base64 Ed25519 public key", s)
	}
	return b, nil
}
