//! Metrics in the Prometheus text format, read from the OpenTelemetry meter provider at each
//! scrape (a pull reader: nothing is computed between scrapes).

use anyhow::{Result, anyhow};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::SdkMeterProvider;

/// The Prometheus view of a meter provider: [`PrometheusMetrics::render`] collects every
/// instrument and writes the text a scrape returns. Cheap to clone.
#[derive(Clone)]
pub struct PrometheusMetrics {
    registry: prometheus::Registry,
}

impl std::fmt::Debug for PrometheusMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrometheusMetrics").finish_non_exhaustive()
    }
}

impl PrometheusMetrics {
    /// A reader to register with a meter provider, and the view that renders what it reads.
    pub(crate) fn reader() -> Result<(opentelemetry_prometheus::PrometheusExporter, Self)> {
        let registry = prometheus::Registry::new();
        let exporter = opentelemetry_prometheus::exporter()
            .with_registry(registry.clone())
            // Every orstream instrument has the same scope; the label would only add noise.
            .scope_info_enabled(false)
            .build()
            .map_err(|e| anyhow!("creating the Prometheus metrics reader: {e}"))?;
        Ok((exporter, Self { registry }))
    }

    /// A meter provider read only by Prometheus, not installed as the global one: for tests
    /// and for processes that serve metrics for a part of themselves.
    pub fn provider(service_name: &str) -> Result<(SdkMeterProvider, Self)> {
        let (reader, metrics) = Self::reader()?;
        let provider = SdkMeterProvider::builder()
            .with_resource(
                Resource::builder()
                    .with_service_name(service_name.to_owned())
                    .build(),
            )
            .with_reader(reader)
            .build();
        Ok((provider, metrics))
    }

    /// Every metric now, in the Prometheus text exposition format (version 0.0.4).
    pub fn render(&self) -> Result<String> {
        let families = self.registry.gather();
        prometheus::TextEncoder::new()
            .encode_to_string(&families)
            .map_err(|e| anyhow!("encoding metrics as Prometheus text: {e}"))
    }
}
