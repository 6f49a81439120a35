//! The gauges of PreviewEnvironments by phase (and by tenant, repository and phase), counted
//! from the cache at scrape time.

use std::sync::Arc;

use kube::runtime::reflector::Store;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use super::{Caches, PHASES, PhaseLabels, PreviewLabels, whose};
use crate::api::Phase;

/// Counts PreviewEnvironments by phase from the cache at scrape time, so deleted ones never
/// linger in a gauge.
#[derive(Debug, Clone, Default)]
pub(super) struct PhaseCollector {
    pub(super) caches: Arc<Caches>,
}

impl Collector for PhaseCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let family = Family::<PhaseLabels, Gauge>::default();
        for phase in PHASES {
            // Every phase is exported, zero included, so dashboards need no absent() juggling.
            drop(family.get_or_create(&PhaseLabels {
                phase: phase.as_str().to_string(),
            }));
        }
        let by_tenant = Family::<PreviewLabels, Gauge>::default();
        let cached = self
            .caches
            .previews
            .get()
            .map(Store::state)
            .unwrap_or_default();
        let labels = self.caches.labels();
        for pe in cached {
            let phase = pe
                .status
                .as_ref()
                .and_then(|s| s.phase)
                .unwrap_or(Phase::Pending);
            family
                .get_or_create(&PhaseLabels {
                    phase: phase.as_str().to_string(),
                })
                .inc();
            let whose = whose(
                &labels,
                pe.metadata.namespace.as_deref(),
                &pe.spec.repository,
            );
            by_tenant
                .get_or_create(&PreviewLabels {
                    tenant: whose.tenant,
                    repository: whose.repository,
                    phase: phase.as_str().to_string(),
                })
                .inc();
        }
        let metric = encoder.encode_descriptor(
            "environments",
            "PreviewEnvironments by phase",
            None,
            family.metric_type(),
        )?;
        family.encode(metric)?;
        let metric = encoder.encode_descriptor(
            "previews",
            "PreviewEnvironments by tenant (their namespace), repository (as their class names \
             it, or the class's glob that admits it) and phase",
            None,
            by_tenant.metric_type(),
        )?;
        by_tenant.encode(metric)
    }
}
