// Package config reads the TOML file named by TSLM_CONFIG into a
// gateway.Config.
//
// The file has the original TSLM's format, named [listener.NAME] tables
// (public, internal or its original name private, and any other name for
// a further public-role listener, each with its own limits and tokens),
// extended with TSLM's own tables ([auth], [auth.oidc], [[auth.api_key]],
// [[auth.token_key]], [auth.publisher_tokens], [[channel]]); docs/config.md
// documents every key. Decoding is strict: an unknown key, a value of the
// wrong type or malformed TOML is an error, and so is every value that
// means nothing (a bad pattern, an unknown operation, a hash that is not
// one). Each mistake is an *Error naming the file, the line and column,
// and the key; Load reports every one it finds, in the file's order, except
// that malformed TOML and a value of the wrong type stop the decoder at the
// first.
//
// Environment variables override the file: cmd/tslm passes the Config Load
// returns to envconfig.LoadOver, where every TSLM_* variable that is set
// replaces the file's value of the same setting.
//
// The package has no state; Load is safe for concurrent use.
package config
