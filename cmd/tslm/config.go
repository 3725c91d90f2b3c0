package main

import (
	"errors"
	"fmt"
	"reflect"
	"strings"

	"github.com/caarlos0/env/v11"

	"github.com/tslm/tslm/gateway"
)

// loadConfig reads the TSLM_* variables from environ (nil: the process's
// environment) and validates them. Every error names the variable at fault.
func loadConfig(environ map[string]string) (gateway.Config, error) {
	cfg, err := env.ParseAsWithOptions[gateway.Config](env.Options{Prefix: gateway.Prefix, Environment: environ})
	if err != nil {
		return cfg, nameVariables(err)
	}
	return cfg, cfg.Validate()
}

// nameVariables rewrites the env parser's errors, which name Go struct
// fields, to name the environment variables an operator actually sets.
func nameVariables(err error) error {
	var agg env.AggregateError
	if !errors.As(err, &agg) {
		return err
	}
	fields := reflect.TypeFor[gateway.Config]()
	msgs := make([]string, 0, len(agg.Errors))
	for _, e := range agg.Errors {
		var pe env.ParseError
		if errors.As(e, &pe) {
			if f, ok := fields.FieldByName(pe.Name); ok {
				msgs = append(msgs, fmt.Sprintf("%s%s: invalid value: %v", gateway.Prefix, f.Tag.Get("env"), pe.Err))
				continue
			}
		}
		msgs = append(msgs, e.Error())
	}
	return errors.New(strings.Join(msgs, "; "))
}
