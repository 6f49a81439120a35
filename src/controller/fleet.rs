//! The fleet step of a reconcile: where a running preview stands with the changes of its
//! class and template (`rollouts` holds the slots and the pure rules), whether its change may
//! roll out now, and the `UpToDate` condition and `status.revision` it ends with.

use kube::runtime::reflector::ObjectRef;

use super::build::{self, Preview};
use super::context::Context;
use super::observe::Observed;
use super::plan::Plan;
use super::rollouts::{self, Fleet};
use super::status;
use crate::api::{Reason, Revision};

/// Where the preview stands with the changes of its class and template, before its turn.
pub fn of(ctx: &Context, plan: &Plan<'_>, missing_secrets: Vec<String>) -> Fleet {
    let pe = plan.pe;
    Fleet {
        now: plan.revision,
        cause: rollouts::cause(
            pe.status.as_ref(),
            pe.metadata.generation,
            &pe.spec.head_sha,
            plan.revision,
        ),
        queued: None,
        missing_secrets,
        changing: false,
        blocked: None,
        change: change_of(plan),
        halted: None,
        class: plan.policy.class.clone(),
        template: pe.spec.template_ref.as_ref().map(|t| t.name.clone()),
        limit: ctx.rollouts.limit(),
    }
}

/// The change a settled preview's workloads would roll to, named for its rollout's record:
/// the template's when it changed (a template edit), else the class's.
fn change_of(plan: &Plan<'_>) -> Option<String> {
    let pe = plan.pe;
    let cause = rollouts::cause(
        pe.status.as_ref(),
        pe.metadata.generation,
        &pe.spec.head_sha,
        plan.revision,
    )?;
    let generation = |g: Option<i64>| g.map_or_else(String::new, |g| format!("@{g}"));
    Some(match cause {
        Reason::TemplateChanged => format!(
            "PreviewTemplate {}/{}{}",
            plan.owner.namespace,
            pe.spec
                .template_ref
                .as_ref()
                .map_or("", |t| t.name.as_str()),
            generation(plan.revision.template_generation)
        ),
        _ => format!(
            "PreviewClass {}{}",
            plan.policy.class.as_deref().unwrap_or("(none)"),
            generation(plan.revision.class_generation)
        ),
    })
}

/// A change of the class or template that would roll the pods of a running preview waits
/// for a rollout slot; meanwhile the workloads it would change are left as they run.
pub fn take_turn(
    ctx: &Context,
    plan: &Plan<'_>,
    preview: &Preview<'_>,
    env: &mut build::Environment,
    fleet: &mut Fleet,
) {
    let changed = rollouts::changed(env, &ctx.stores);
    fleet.changing = !changed.is_empty();
    if fleet.cause.is_none() || preview.asleep || changed.is_empty() {
        return;
    }
    if let Some(failed_on) = fleet.change.as_deref().and_then(|c| ctx.rollouts.halted(c)) {
        env.hold(changed);
        fleet.halted = Some(failed_on);
        return;
    }
    let key = ObjectRef::from_obj(plan.pe);
    if let Err(ahead) = ctx.rollouts.start(&plan.owner.uid, key) {
        env.hold(changed);
        fleet.queued = Some(ahead);
    }
}

/// Why the tests run again at the same sha when the preview's own spec changed (images,
/// parameters): its status showed a finished run of this sha at an older generation.
pub fn spec_changed(plan: &Plan<'_>) -> Option<Reason> {
    let previous = plan.pe.status.as_ref()?;
    let same_sha = previous.deployed_sha.as_deref() == Some(plan.pe.spec.head_sha.as_str());
    (same_sha && previous.observed_generation != plan.pe.metadata.generation)
        .then_some(Reason::SpecChanged)
}

/// The `UpToDate` condition and the revision the status records; frees the preview's
/// rollout slot once its change is rolled out (or has failed: the next in line goes on).
pub fn status(
    ctx: &Context,
    plan: &Plan<'_>,
    fleet: &Fleet,
    observed: &Observed,
) -> Option<(status::Verdict, Option<Revision>)> {
    let rolled_out = fleet.rolled_out(observed);
    let failed = observed.service_failure().is_some() || observed.failed_test().is_some();
    let took_part = fleet.queued.is_none() && fleet.halted.is_none();
    if took_part && (rolled_out || failed) {
        ctx.rollouts.finish(&plan.owner.uid);
    }
    // A fleet change that broke this preview counts against the change.
    if let (true, true, Some(change)) = (took_part && fleet.cause.is_some(), failed, &fleet.change)
    {
        ctx.rollouts.failed(
            change,
            &crate::naming::PreviewKey::from(&plan.owner).to_string(),
        );
    }
    let previous = plan.pe.status.as_ref().and_then(|s| s.revision);
    let revision = if rolled_out {
        Some(fleet.now)
    } else {
        previous
    };
    Some((fleet.up_to_date(rolled_out), revision))
}
