//! The CustomResourceDefinition of [`OrbitCluster`], and checking a document against it before
//! the API server does.
//!
//! The CRD's schema is derived (kube + schemars), `persistence` included: the core's
//! `PersistenceConfig` type, not a copy. [`validation_schema`] turns it into a JSON Schema
//! (draft 4, the dialect of OpenAPI v3 schemas) that refuses what the API server refuses under
//! `kubectl`'s strict field validation: unknown fields, and values of the wrong type or out of
//! range, each reported with the path of the field.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use serde_json::{Value, json};

use crate::resource::{InvalidSpec, OrbitCluster};

/// The CRD, as `kubectl apply` takes it.
pub fn crd() -> CustomResourceDefinition {
    OrbitCluster::crd()
}

/// The CRD as YAML.
pub fn crd_yaml() -> Result<String, serde_saphyr::ser::Error> {
    serde_saphyr::to_string(&crd())
}

/// The CRD's OpenAPI v3 schema of one `OrbitCluster` as a draft-4 JSON Schema: `nullable`
/// becomes a `null` type, every object schema with properties refuses other fields (as strict
/// field validation does), and the root admits `apiVersion`, `kind` and `metadata`, which the
/// CRD leaves to the API server.
pub fn validation_schema() -> Value {
    let crd = crd();
    let props = crd.spec.versions[0]
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .expect("the derived CRD has a schema");
    let mut schema = serde_json::to_value(props).expect("a schema is JSON");
    strict(&mut schema);
    if let Some(properties) = schema["properties"].as_object_mut() {
        properties.insert(
            "apiVersion".into(),
            json!({ "enum": [format!("{}/{}", crate::GROUP, crate::VERSION)] }),
        );
        properties.insert("kind".into(), json!({ "enum": ["OrbitCluster"] }));
        properties.insert("metadata".into(), json!({ "type": "object" }));
    }
    schema["required"] = json!(["apiVersion", "kind", "metadata", "spec"]);
    schema
}

/// Rewrites an OpenAPI schema node (and its children) into strict JSON Schema.
fn strict(node: &mut Value) {
    match node {
        Value::Object(map) => {
            if map.get("nullable") == Some(&Value::Bool(true)) {
                map.remove("nullable");
                if let Some(Value::String(t)) = map.get("type").cloned() {
                    map.insert("type".into(), json!([t, "null"]));
                }
                if let Some(Value::Array(values)) = map.get_mut("enum")
                    && !values.contains(&Value::Null)
                {
                    values.push(Value::Null);
                }
            }
            let preserves = map.get("x-kubernetes-preserve-unknown-fields") == Some(&json!(true));
            if map.contains_key("properties")
                && !preserves
                && !map.contains_key("additionalProperties")
            {
                map.insert("additionalProperties".into(), Value::Bool(false));
            }
            map.values_mut().for_each(strict);
        }
        Value::Array(items) => items.iter_mut().for_each(strict),
        _ => {}
    }
}

/// Checks `doc` (one `OrbitCluster` as JSON) against [`validation_schema`]: `Err` lists
/// every violation as `<path>: <what is wrong>`, the path in dots (`spec.persistence.backend`).
pub fn check(doc: &Value) -> Result<(), Vec<String>> {
    let schema = validation_schema();
    let validator = jsonschema::draft4::new(&schema).expect("the CRD schema compiles");
    let mut errors: Vec<String> = validator
        .iter_errors(doc)
        .map(|e| {
            let pointer = e.instance_path().to_string();
            let path = pointer.trim_start_matches('/').replace('/', ".");
            let path = if path.is_empty() { "(document)" } else { &path };
            format!("{path}: {e}")
        })
        .collect();
    errors.sort();
    match errors.is_empty() {
        true => Ok(()),
        false => Err(errors),
    }
}

/// Reads one `OrbitCluster` from YAML the way the API server and the operator would: the
/// schema first (unknown fields, types, ranges), then the typed resource, then the spec's own
/// rules ([`crate::OrbitClusterSpec::validate`]). Every message names the field.
pub fn parse(yaml: &str) -> Result<OrbitCluster, InvalidSpec> {
    let doc: Value =
        serde_saphyr::from_str(yaml).map_err(|e| InvalidSpec(format!("not YAML: {e}")))?;
    check(&doc).map_err(|errors| InvalidSpec(errors.join("; ")))?;
    // What the schema keeps as given (`sync`) is checked here, by the config's own parser.
    let cluster: OrbitCluster = serde_path_to_error::deserialize(doc)
        .map_err(|e| InvalidSpec(format!("{}: {}", e.path(), e.inner())))?;
    cluster.spec.validate()?;
    Ok(cluster)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_crd_names_the_resource_and_types_the_persistence_config() {
        let crd = crd();
        assert_eq!(
            crd.metadata.name.as_deref(),
            Some("orbitclusters.orbit-persistence.io")
        );
        assert_eq!(crd.spec.versions[0].name, "v1alpha1");
        let schema = validation_schema();
        let persistence = &schema["properties"]["spec"]["properties"]["persistence"];
        let backends = persistence["properties"]["backend"]["enum"].clone();
        assert_eq!(
            backends,
            json!(["memory", "cow_btree", "lsm_tree", "rocksdb", "etcd"])
        );
        let lsm = &persistence["properties"]["lsm_tree"]["properties"];
        assert_eq!(lsm["bloom_filter_fp_rate"]["type"], json!("number"));
        assert_eq!(
            lsm["sync"]["x-kubernetes-preserve-unknown-fields"],
            json!(true),
            "a string or an object: kept as given, checked by the config parser"
        );
    }

    #[test]
    fn check_names_the_path_of_each_bad_field() {
        let doc = json!({
            "apiVersion": "orbit-persistence.io/v1alpha1",
            "kind": "OrbitCluster",
            "metadata": {"name": "x"},
            "spec": {"image": "i", "replicas": 0, "persistence": {"backend": "memory"}, "colour": 1},
        });
        let errors = check(&doc).unwrap_err();
        assert!(
            errors.iter().any(|e| e.starts_with("spec.replicas:")),
            "{errors:?}"
        );
        assert!(errors.iter().any(|e| e.contains("colour")), "{errors:?}");
        let mut fine = doc.clone();
        fine["spec"]["replicas"] = json!(1);
        fine["spec"].as_object_mut().unwrap().remove("colour");
        check(&fine).unwrap();
    }
}
