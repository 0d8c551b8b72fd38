//! The daemon's, engine's and store's values as the API writes them
//! ([`weir_api`]): the one place where an internal shape becomes a wire
//! shape, field by field, so the compiler names every place a change of
//! either touches. `weir run --output json` prints through here too.

use weir_api as api;
use weir_engine as engine;

/// A run, with `trigger` (its cause's kind) and `retry_of` beside the cause.
pub fn run(run: &engine::Run) -> api::Run {
    api::Run {
        id: run.id.clone(),
        pipeline: run.pipeline.clone(),
        cause: cause(&run.cause),
        params: run.params.iter().cloned().collect(),
        event: run.event.clone(),
        models: run.models.clone(),
        state: run_state(run.state),
        reason: run.reason.clone(),
        created_at: run.created_at,
        started_at: run.started_at,
        finished_at: run.finished_at,
        deadline: run.deadline,
        stopping: run.stopping.as_ref().map(|s| api::Stopping {
            reason: s.reason.clone(),
            fails: s.fails,
        }),
        steps: run.steps.iter().map(step).collect(),
        source_commit: run.source_commit.clone(),
        trigger: run.cause.kind().to_owned(),
        retry_of: run.retry_of().map(str::to_owned),
    }
}

/// One step instance, with its attempts and evidence.
pub fn step(step: &engine::StepRun) -> api::StepRun {
    api::StepRun {
        id: step.id.clone(),
        step: step.step,
        matrix: step.matrix.clone(),
        state: step_state(step.state),
        reason: step.reason.clone(),
        attempts: step.attempts.iter().map(attempt).collect(),
        not_before: step.not_before,
        waiting_until: step.waiting_until,
        evidence: step
            .evidence
            .iter()
            .map(|e| api::Evidence {
                expression: e.expression.clone(),
                reads: (e.reads.iter())
                    .map(|r| api::Read {
                        path: r.path.clone(),
                        value: r.value.clone(),
                    })
                    .collect(),
                holds: e.holds,
                explanation: e.explanation.clone(),
            })
            .collect(),
        started_at: step.started_at,
        finished_at: step.finished_at,
    }
}

fn attempt(attempt: &engine::Attempt) -> api::Attempt {
    api::Attempt {
        number: attempt.number,
        state: attempt_state(attempt.state),
        created_at: attempt.created_at,
        started_at: attempt.started_at,
        finished_at: attempt.finished_at,
        deadline: attempt.deadline,
        stopping: attempt.stopping.map(|s| match s {
            engine::StopReason::Timeout => api::StopReason::Timeout,
            engine::StopReason::Cancel => api::StopReason::Cancel,
        }),
        exit_code: attempt.exit_code,
        metrics: attempt.metrics.clone(),
        outputs: attempt.outputs.clone(),
        image: attempt.image.clone(),
        artifacts: attempt.artifacts.clone(),
        gpus: attempt.gpus.clone(),
        reason: attempt.reason.clone(),
    }
}

/// What started a run.
pub fn cause(cause: &engine::Cause) -> api::Cause {
    use engine::Cause as C;
    match cause.clone() {
        C::Manual { actor } => api::Cause::Manual { actor },
        C::Webhook { delivery } => api::Cause::Webhook { delivery },
        C::Schedule { slot } => api::Cause::Schedule { slot },
        C::Backfill { slot } => api::Cause::Backfill { slot },
        C::Drift { metric, value } => api::Cause::Drift { metric, value },
        C::Retry { of, from, actor } => api::Cause::Retry { of, from, actor },
        C::Replay {
            model,
            version,
            of,
            actor,
            images,
        } => api::Cause::Replay {
            model,
            version,
            of,
            actor,
            images,
        },
    }
}

/// What weir decided for an event.
pub fn decision(decision: &engine::Decision) -> api::Decision {
    use engine::Decision as D;
    match decision.clone() {
        D::Triggered { run } => api::Decision::Triggered { run },
        D::Coalesced { run } => api::Decision::Coalesced { run },
        D::Cooldown {
            run,
            ago_secs,
            cooldown,
        } => api::Decision::Cooldown {
            run,
            ago_secs,
            cooldown,
        },
        D::BelowThreshold {
            metric,
            value,
            threshold,
        } => api::Decision::BelowThreshold {
            metric,
            value,
            threshold,
        },
        D::NoRule { metric } => api::Decision::NoRule { metric },
        D::Rejected { reason } => api::Decision::Rejected { reason },
    }
}

/// A run's state.
pub fn run_state(state: engine::RunState) -> api::RunState {
    use engine::RunState as S;
    match state {
        S::Queued => api::RunState::Queued,
        S::Running => api::RunState::Running,
        S::Succeeded => api::RunState::Succeeded,
        S::Failed => api::RunState::Failed,
        S::Cancelled => api::RunState::Cancelled,
    }
}

/// A step's state.
pub fn step_state(state: engine::StepState) -> api::StepState {
    use engine::StepState as S;
    match state {
        S::Pending => api::StepState::Pending,
        S::Running => api::StepState::Running,
        S::Waiting => api::StepState::Waiting,
        S::Succeeded => api::StepState::Succeeded,
        S::Failed => api::StepState::Failed,
        S::Cancelled => api::StepState::Cancelled,
        S::Skipped => api::StepState::Skipped,
    }
}

fn attempt_state(state: engine::AttemptState) -> api::AttemptState {
    use engine::AttemptState as S;
    match state {
        S::Pending => api::AttemptState::Pending,
        S::Running => api::AttemptState::Running,
        S::Succeeded => api::AttemptState::Succeeded,
        S::Failed => api::AttemptState::Failed,
        S::Cancelled => api::AttemptState::Cancelled,
        S::Lost => api::AttemptState::Lost,
    }
}

/// A run in a listing.
pub(crate) fn run_summary(run: weir_store::RunSummary) -> api::RunSummary {
    api::RunSummary {
        state: run_state(run.state),
        id: run.id,
        pipeline: run.pipeline,
        trigger: run.trigger,
        reason: run.reason,
        created_at: run.created_at,
        finished_at: run.finished_at,
    }
}

pub(crate) fn pipeline(loaded: &weir_daemon::Loaded) -> api::Pipeline {
    api::Pipeline {
        name: loaded.pipeline.name.value.clone(),
        description: loaded.pipeline.description.clone(),
        steps: loaded.pipeline.steps.len(),
        file: loaded.path.display().to_string(),
        hash: loaded.hash.clone(),
        manual: loaded.pipeline.on.manual,
    }
}

pub(crate) fn event(event: weir_store::EventRecord) -> api::Event {
    api::Event {
        detail: decision(&event.detail),
        id: event.id,
        kind: event.kind,
        pipeline: event.pipeline,
        run_id: event.run_id,
        payload: event.payload,
        decision: event.decision,
        outcome: event.outcome,
        created_at: event.created_at,
    }
}

pub(crate) fn model_version(
    v: weir_store::ModelVersion,
    mirror: Option<weir_store::MirrorItem>,
) -> api::ModelVersion {
    let mlflow = mirror.map(|m| -> Box<api::MlflowMirror> {
        let result: serde_json::Value = m
            .result
            .as_deref()
            .and_then(|r| serde_json::from_str(r).ok())
            .unwrap_or_default();
        let text = |key: &str| result[key].as_str().map(str::to_owned);
        Box::new(api::MlflowMirror {
            version: text("version"),
            run_id: text("run_id"),
            next_at: (m.state == "pending").then_some(m.next_at),
            state: m.state,
            tracking_uri: m.tracking_uri,
            attempts: m.attempts,
            error: m.last_error,
        })
    });
    api::ModelVersion {
        mlflow,
        model: v.model,
        version: v.version,
        artifact: v.artifact,
        sha256: v.sha256,
        metrics: v.metrics,
        run_id: v.run_id,
        step: v.step,
        created_at: v.created_at,
    }
}

pub(crate) fn model_summary(m: weir_store::ModelSummary) -> api::ModelSummary {
    api::ModelSummary {
        model: m.model,
        latest: m.latest,
        versions: m.versions,
        aliases: m.aliases.into_iter().collect(),
    }
}

pub(crate) fn alias_move(m: weir_store::AliasMove) -> api::AliasMove {
    api::AliasMove {
        alias: m.alias,
        version: m.version,
        from_version: m.from_version,
        actor: m.actor,
        run_id: m.run_id,
        moved_at: m.moved_at,
    }
}

pub(crate) fn audit_entry(e: weir_store::AuditEntry) -> api::AuditEntry {
    api::AuditEntry {
        seq: e.seq,
        at: e.at,
        actor: e.actor,
        action: e.action,
        subject: e.subject,
        payload: e.payload,
        prev_hash: e.prev_hash,
        hash: e.hash,
        signature: e.signature,
    }
}

/// The audit chain's check, as `GET /audit/verify` answers it.
pub fn verification(v: weir_daemon::Verified) -> api::Verification {
    api::Verification {
        verified: v.broken.is_none(),
        entries: v.entries,
        seq: v.broken.as_ref().map(|b| b.seq),
        reason: v.broken.map(|b| b.reason),
    }
}

pub(crate) fn lineage(l: weir_daemon::Lineage) -> api::Lineage {
    let run = &l.run;
    api::Lineage {
        model: l.version.model,
        version: l.version.version,
        artifact: l.version.artifact,
        sha256: l.version.sha256,
        metrics: l.version.metrics,
        registered_at: l.version.created_at,
        run: api::LineageRun {
            id: run.id.clone(),
            pipeline: run.pipeline.clone(),
            pipeline_hash: l.pipeline_hash,
            source_commit: run.source_commit.clone(),
            trigger: run.cause.kind().to_owned(),
            cause: cause(&run.cause),
            retry_of: run.retry_of().map(str::to_owned),
            params: run.params.iter().cloned().collect(),
            event: l.event.map(|e| api::LineageEvent {
                detail: decision(&e.detail),
                id: e.id,
                kind: e.kind,
                decision: e.decision,
                outcome: e.outcome,
            }),
            event_commit: l.event_commit,
            created_at: run.created_at,
        },
        steps: (l.steps.into_iter())
            .map(|s| api::LineageStep {
                id: s.instance.id,
                kind: s.kind.to_owned(),
                state: step_state(s.instance.state),
                reason: s.instance.reason,
                attempt: s.attempt.as_ref().map(|a| a.number),
                image: s.attempt.as_ref().and_then(|a| a.image.clone()),
                artifacts: s
                    .attempt
                    .as_ref()
                    .map(|a| a.artifacts.clone())
                    .unwrap_or_default(),
                outputs: s
                    .attempt
                    .as_ref()
                    .map(|a| a.outputs.clone())
                    .unwrap_or_default(),
                metrics: s.attempt.map(|a| a.metrics).unwrap_or_default(),
            })
            .collect(),
        replays: l.replays.into_iter().map(replay).collect(),
    }
}

/// A kept replay finding, as the API shows it.
pub(crate) fn replay(kept: weir_store::StoredReplay) -> api::Replay {
    let found: Option<engine::Reproduction> = serde_json::from_value(kept.result).ok();
    let Some(found) = found else {
        return api::Replay {
            run: kept.run_id,
            original: kept.original,
            state: api::RunState::Failed,
            reproduced: kept.reproduced,
            compared: 0,
            identical: 0,
            summary: "the finding of this replay cannot be read".to_owned(),
            artifacts: Vec::new(),
            first_difference: None,
            created_at: kept.created_at,
        };
    };
    api::Replay {
        run: kept.run_id,
        original: kept.original,
        state: run_state(found.state),
        reproduced: found.reproduced,
        compared: found.compared as i64,
        identical: found.identical as i64,
        summary: found.summary,
        artifacts: (found.artifacts.into_iter())
            .map(|a| api::ReplayedArtifact {
                step: a.step,
                path: a.path,
                original: a.original,
                replayed: a.replayed,
                identical: a.identical,
            })
            .collect(),
        first_difference: found.first_difference.map(|d| api::ReplayDifference {
            step: d.step,
            paths: d.paths,
            cause: d.cause,
        }),
        created_at: kept.created_at,
    }
}

pub(crate) fn model_card(model: &str, version: i64, card: weir_daemon::Card) -> api::ModelCard {
    let verified = card.verified();
    let (audit_seq, recorded_sha256) = match card.recorded {
        Some((seq, recorded)) => (Some(seq), recorded),
        None => (None, None),
    };
    api::ModelCard {
        model: model.to_owned(),
        version,
        card: card.card,
        sha256: card.sha256,
        audit_seq,
        recorded_sha256,
        verified,
    }
}
