package jobspec

import (
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strings"

	"sigs.k8s.io/yaml"

	"github.com/modcoord/modcoord/mod"
)

// Parse decodes a YAML or JSON job spec, fills defaults and validates it
// under limits (the zero Limits means the defaults). Unknown fields are
// refused. All problems are joined into one error, one line per field,
// each naming the field and the fix; the spec is returned as far as it
// could be decoded.
//
// The input is bounded (MaxSpecBytes) before any decoding, and the YAML
// decoder refuses alias bombs, so no input costs more than a few times
// MaxSpecBytes of memory (FuzzParse checks it).
func Parse(data []byte, limits Limits) (Spec, error) {
	if len(data) > MaxSpecBytes {
		return Spec{}, fmt.Errorf("spec: %d bytes is more than the %d allowed; a job spec is a few hundred bytes", len(data), MaxSpecBytes)
	}
	// Strict YAML refuses duplicate keys; decoding into a map first lets us
	// name every unknown field, at every level, instead of only the first.
	var raw map[string]any
	if err := yaml.UnmarshalStrict(data, &raw); err != nil {
		return Spec{}, fmt.Errorf("spec: not a YAML or JSON object: %w", err)
	}
	if raw == nil {
		return Spec{}, errors.New("spec: empty; see docs for the fields a job needs (name, data, model, batch, budget_flops)")
	}
	errs := unknownFields(raw)

	// Omitted optimizer fields keep DefaultOptim's values, while a field set
	// explicitly to 0 (clip_norm: 0 disables clipping) stays 0.
	spec := Spec{Optim: mod.DefaultOptim()}
	if err := yaml.Unmarshal(data, &spec); err != nil {
		errs = append(errs, fmt.Errorf("spec: %w", err))
		return spec, errors.Join(errs...)
	}
	spec = spec.WithDefaults()
	if err := spec.Validate(limits); err != nil {
		errs = append(errs, err)
	}
	return spec, errors.Join(errs...)
}

// unknownFields names every key in a decoded spec that Spec, mod.Config or
// mod.OptimConfig does not have, with the fields that do exist.
func unknownFields(raw map[string]any) []error {
	var errs []error
	check := func(prefix string, m map[string]any, t reflect.Type) {
		known := jsonFieldNames(t)
		for _, k := range sortedKeys(m) {
			if !known[k] {
				errs = append(errs, fmt.Errorf("%s%s: unknown field; known fields are %s", prefix, truncate(k, 80), strings.Join(sortedKeys(known), ", ")))
			}
		}
	}
	check("", raw, reflect.TypeFor[Spec]())
	if m, ok := raw["model"].(map[string]any); ok {
		check("model.", m, reflect.TypeFor[mod.Config]())
	}
	if m, ok := raw["optim"].(map[string]any); ok {
		check("optim.", m, reflect.TypeFor[mod.OptimConfig]())
	}
	if m, ok := raw["shards"].(map[string]any); ok {
		check("shards.", m, reflect.TypeFor[Shards]())
	}
	if m, ok := raw["sync"].(map[string]any); ok {
		check("sync.", m, reflect.TypeFor[Sync]())
	}
	if m, ok := raw["init_from"].(map[string]any); ok {
		check("init_from.", m, reflect.TypeFor[InitFrom]())
	}
	return errs
}

func jsonFieldNames(t reflect.Type) map[string]bool {
	names := map[string]bool{}
	for i := range t.NumField() {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ",")
		if name != "" && name != "-" {
			names[name] = true
		}
	}
	return names
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
