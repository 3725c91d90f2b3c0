package auth

// The refusal categories, for the tests of package auth_test.
var (
	ErrExpired      = errExpired
	ErrSignature    = errSignature
	ErrUnknownKID   = errUnknownKID
	ErrNoKID        = errNoKID
	ErrIssuer       = errIssuer
	ErrAudience     = errAudience
	ErrAlg          = errAlg
	ErrMissingClaim = errMissingClaim
	ErrNotYetValid  = errNotYetValid
	ErrClaims       = errClaims
	ErrMalformed    = errMalformed
	ErrUnavailable  = errUnavailable
)
