package httpapi

// WithDefaults returns c with every zero field set to its documented
// default, as New applies them.
func (c Config) WithDefaults() Config {
	c.setDefaults()
	return c
}
