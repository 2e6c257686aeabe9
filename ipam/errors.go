package ipam

import "errors"

// Kinds of error the plugin may want to tell apart (errors.Is). The message
// of the *Error carrying them says what happened and what to do.
var (
	ErrNoSubnet       = errors.New("meshnet needs --subnet: docker network create -d meshnet --ipam-driver meshnet --subnet 10.42.0.0/16 NAME")
	ErrBadSubnet      = errors.New("invalid subnet")
	ErrOverlap        = errors.New("subnet overlaps another meshnet pool")
	ErrTooSmall       = errors.New("subnet too small")
	ErrOptions        = errors.New("pool options disagree with the cluster")
	ErrUnknownPool    = errors.New("unknown pool")
	ErrAddressInUse   = errors.New("address in use")
	ErrNotInPool      = errors.New("address outside the pool")
	ErrExhausted      = errors.New("pool exhausted")
	ErrGateway        = errors.New("gateway disagrees with the cluster")
	ErrHandoffTimeout = errors.New("no address block arrived in time")
	ErrNotJoined      = errors.New("not joined to the cluster yet")
)

// Error is an error that names its kind (one of the Err values above) and
// says what to do in Msg.
type Error struct {
	Kind error
	Msg  string
}

func (e *Error) Error() string { return e.Msg }
func (e *Error) Unwrap() error { return e.Kind }
