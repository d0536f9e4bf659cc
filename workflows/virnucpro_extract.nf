/*
 * PREFLIGHT -> (IDENTIFY_FRAMES for prefixes given as genomes -> SPLIT_IDENTIFIED for those and for unsplit
 * identified FASTA) -> PLAN_CHUNKS -> EMBED_DNA (chunks without DNABERT-S files) -> EMBED_PROTEINS ->
 * MERGE_FEATURES -> VALIDATE_OUTPUTS -> REPORT, then PUBLISH and FINALISE_OUTDIR. The chunks travel in task groups
 * of --chunks_per_task (chosen by PLAN_CHUNKS): every GPU, merge and validation task handles one group, and
 * outputs are joined on the group's meta.id.
 */
include { PREFLIGHT        } from '../modules/local/preflight'
include { IDENTIFY_FRAMES  } from '../modules/local/identify_frames'
include { SPLIT_IDENTIFIED } from '../modules/local/split_identified'
include { PLAN_CHUNKS      } from '../modules/local/plan_chunks'
include { EMBED_DNA        } from '../modules/local/embed_dna'
include { EMBED_PROTEINS   } from '../modules/local/embed_proteins'
include { MERGE_FEATURES   } from '../modules/local/merge_features'
include { VALIDATE_OUTPUTS } from '../modules/local/validate_outputs'
include { REPORT           } from '../modules/local/report'
include { PUBLISH          } from '../modules/local/publish'
include { FINALISE_OUTDIR  } from '../modules/local/finalise_outdir'
include { runParams        } from '../subworkflows/local/utils_virnucpro_extract'

// The parameters PREFLIGHT's result depends on (its cache key): not --outdir, not batching or container options.
def preflightParams(dataDir) {
    def names = ['input', 'data_dir', 'esm_model', 'dnabert_model', 'max_length', 'balance_hosts', 'seed',
                 'allow_missing', 'recompute_dnabert', 'chunks_per_task', 'read_length', 'sequences_per_file',
                 'keep_partial_files']
    def values = params.subMap(names)
    if (dataDir) {
        values.data_dir = dataDir
    }
    ['input', 'data_dir'].each { name ->
        if (values[name]) {
            values[name] = file(values[name]).toAbsolutePath().normalize().toString()
        }
    }
    groovy.json.JsonOutput.toJson(values)
}

// One task group of the manifest: meta.id, and the chunks in key order with what the later tasks need of each.
def groupMeta(group, rows) {
    def chunks = rows.sort { row -> row.key }.collect { row ->
        [key: row.key, id: row.id, group: row.group, label: row.label, dnabert_computed: row.compute_dnabert == 'true',
         protein_fasta: row.protein_fasta, dnabert_embeddings: row.dnabert_embeddings, nucleotide_fasta: row.nucleotide_fasta]
    }
    [id: "group_${group}", chunks: chunks]
}

// One CSV field, always quoted (paths may hold commas).
def csvQuote(value) {
    return '"' + (value == null ? '' : value.toString()).replace('"', '""') + '"'
}

// The manifest's columns, and two more for PLAN_CHUNKS: where a chunk comes from, and whether its file is full.
def candidateCsv(rows) {
    def columns = ['key', 'id', 'group', 'label', 'protein_fasta', 'dnabert_embeddings', 'task_group', 'proteins',
                   'truncated', 'max_residues', 'nucleotide_fasta', 'compute_dnabert', 'origin', 'full']
    ([columns.join(',')] + rows.sort { row -> row.key }.collect { row -> columns.collect { c -> csvQuote(row[c]) }.join(',') })
        .join('\n') + '\n'
}

// The rows of one SPLIT_IDENTIFIED task's chunk files, paths in its output folder.
def splitRows(meta, chunks, stats) {
    new groovy.json.JsonSlurper().parse(stats).chunks.collect { chunk ->
        [key: "${meta.prefix}/${chunk.id}", id: chunk.id, group: meta.prefix, label: meta.label,
         protein_fasta: "${chunks}/${meta.prefix}.identified_protein/${chunk.id}.fa", dnabert_embeddings: '',
         task_group: 0, proteins: chunk.proteins, truncated: chunk.truncated, max_residues: chunk.max_residues,
         nucleotide_fasta: "${chunks}/${meta.prefix}.identified_nucleotide/${chunk.id}.fa", compute_dnabert: 'true',
         origin: 'split', full: chunk.full.toString()]
    }
}

def computedOnly(meta) {
    [id: meta.id, chunks: meta.chunks.findAll { chunk -> chunk.dnabert_computed }]
}

def givenFiles(meta) {
    meta.chunks.findAll { chunk -> !chunk.dnabert_computed }.collect { chunk -> file(chunk.dnabert_embeddings) }
}

// nf-core's versions.yml: one block per process, its tools and versions.
def versionsYaml(entries) {
    entries.unique().groupBy { entry -> entry[0].tokenize(':')[-1] }.sort().collect { process, tools ->
        "${process}:\n" + tools.collect { entry -> "    ${entry[1]}: ${entry[2]}" }.unique().sort().join('\n')
    }.join('\n') + '\n'
}

workflow VIRNUCPRO_EXTRACT {
    take:
    ch_inputs        // value: [[file, the path the user knows it by], ...], every input file for PREFLIGHT to stage
    ch_esm_model     // value: local model directory, or [] for a hub id
    ch_dnabert_model // value: likewise
    ch_data_dir      // value: the data/ folder when the run made it (-profile test alone), else ''
    source           // the name PREFLIGHT's task is tagged with

    main:
    def outdir = file(params.outdir).toAbsolutePath().toString()
    ch_esm = ch_esm_model.map { dir -> [dir ? dir.toString() : params.esm_model, dir] }
    ch_dnabert = ch_dnabert_model.map { dir -> [params.dnabert_model, dir] }
    PREFLIGHT(
        ch_inputs.map { pairs -> [[id: source], pairs.collect { pair -> pair[0] }, pairs.collect { pair -> pair[1] }] },
        ch_esm,
        ch_dnabert,
        file("${projectDir}/nextflow_schema.json"),
        ch_data_dir.map { dir -> preflightParams(dir) },
        workflow.launchDir.toString(),
    )
    ch_summary = PREFLIGHT.out.summary.map { json -> new groovy.json.JsonSlurper().parse(json) }
    // PREFLIGHT's warnings on the console, not only in its .command.err
    ch_summary.subscribe { summary -> summary.warnings.each { line -> log.warn(line.replaceFirst(/^warning: /, '')) } }

    // Prefixes given as RefSeq genomes: one identification task per shard of each genome FASTA, then the shards
    // of each prefix, in order, to the split; prefixes given as unsplit identified FASTA go to the split directly.
    ch_identify_in = ch_summary
        .flatMap { summary -> summary.identify_jobs }
        .map { job ->
            [[id: "${job.prefix}.shard_${job.shard}", prefix: job.prefix, label: job.label, shard: job.shard,
              shards: job.shards, first: job.first, last: job.last, genome: job.fasta,
              genbank_reader: job.genbank_reader ?: 'scan'], file(job.fasta), file(job.genbank)]
        }
    IDENTIFY_FRAMES(ch_identify_in)
    ch_split_from_genomes = IDENTIFY_FRAMES.out.frames
        .map { meta, nucleotide, protein -> [groupKey(meta.prefix, meta.shards), meta, nucleotide, protein] }
        .groupTuple()
        .map { prefix, metas, nucleotides, proteins ->
            def order = (0..<metas.size()).toList().sort { i -> metas[i].shard }
            [[id: prefix.toString(), prefix: prefix.toString(), label: metas[0].label, stage: 'genomes', genome: metas[0].genome],
             order.collect { i -> proteins[i] }, order.collect { i -> nucleotides[i] }]
        }
    ch_split_unsplit = ch_summary
        .flatMap { summary -> summary.split_jobs }
        .map { job -> [[id: job.prefix, prefix: job.prefix, label: job.label, stage: 'unsplit'], [file(job.protein)], [file(job.nucleotide)]] }
    SPLIT_IDENTIFIED(ch_split_from_genomes.mix(ch_split_unsplit))

    // Every chunk, given or split here, to the plan: which to embed, in which task group.
    ch_candidates = PREFLIGHT.out.manifest
        .splitCsv(header: true)
        .map { row -> row + [origin: 'given', full: 'true'] }
        .mix(
            SPLIT_IDENTIFIED.out.chunks
                .join(SPLIT_IDENTIFIED.out.stats)
                .flatMap { meta, chunks, stats -> splitRows(meta, chunks, stats) }
        )
        .toList()
        .map { rows -> candidateCsv(rows) }
    // host sampling here unless PREFLIGHT did it (chunks alone: only the sampled files had to be complete)
    ch_balance = ch_summary.map { summary -> params.balance_hosts && !summary.balanced_here }
    PLAN_CHUNKS(ch_candidates.combine(ch_balance).map { csv, balance -> [[id: source, balance: balance], csv] })

    ch_groups = PLAN_CHUNKS.out.manifest
        .splitCsv(header: true)
        .map { row -> [row.task_group as int, row] }
        .groupTuple()
        .map { group, rows -> groupMeta(group, rows) }

    // DNABERT-S for chunks that have reads but no (or, with --recompute_dnabert, a stale) DNABERT-S file.
    ch_dna_in = ch_groups
        .map { meta -> computedOnly(meta) }
        .filter { meta -> meta.chunks }
        .map { meta -> [meta, meta.chunks.collect { chunk -> file(chunk.nucleotide_fasta) }] }
    EMBED_DNA(ch_dna_in, ch_dnabert, ch_summary.map { s -> s.dnabert_model_fingerprint })

    // EMBED_PROTEINS starts once every EMBED_DNA task has ended: each sizes its batches from the card's free
    // memory, and two on one card would both claim it. DNABERT-S is the short step, so the wait costs little.
    ch_dna_done = EMBED_DNA.out.dnabert.collect().ifEmpty([]).map { _done -> true }
    ch_protein_in = ch_groups
        .map { meta -> [meta, meta.chunks.collect { chunk -> file(chunk.protein_fasta) }] }
        .combine(ch_dna_done)
        .map { meta, fastas, _done -> [meta, fastas] }
    EMBED_PROTEINS(ch_protein_in, ch_esm, ch_summary.map { s -> s.model_fingerprint })

    // Each group's ESM folder with its computed DNABERT-S folder (none where every file was given) and its
    // given DNABERT-S files, joined on the group's id.
    ch_by_id = ch_groups.map { meta -> [meta.id, meta] }
    ch_computed = EMBED_DNA.out.dnabert.map { meta, folder -> [meta.id, folder] }
    ch_merge_in = EMBED_PROTEINS.out.esm
        .map { meta, esm -> [meta.id, esm] }
        .join(ch_by_id)
        .join(ch_computed, remainder: true)
        .filter { id, esm, _meta, _computed -> esm != null }
        .map { _id, esm, meta, computed -> [meta, esm, computed ?: [], givenFiles(meta)] }
    MERGE_FEATURES(ch_merge_in)

    ch_validate_in = ch_merge_in
        .map { meta, esm, computed, given -> [meta.id, meta, esm, computed, given] }
        .join(MERGE_FEATURES.out.merged.map { meta, merged -> [meta.id, merged] })
        .map { _id, meta, esm, computed, given, merged ->
            [meta, meta.chunks.collect { chunk -> file(chunk.protein_fasta) }, given, computed, esm, merged]
        }
    VALIDATE_OUTPUTS(ch_validate_in)

    ch_versions = channel.topic('versions')
        .collect(flat: false)
        .map { entries -> versionsYaml(entries) }

    REPORT(
        VALIDATE_OUTPUTS.out.validation.map { _meta, validation, _sample -> validation }.collect(),
        VALIDATE_OUTPUTS.out.validation.map { _meta, _validation, sample -> sample }.collect(),
        PREFLIGHT.out.summary,
        EMBED_PROTEINS.out.stats.map { _meta, stats -> stats }.collect(),
        MERGE_FEATURES.out.stats.map { _meta, stats -> stats }.collect(),
        EMBED_DNA.out.stats.map { _meta, stats -> stats }.collect().ifEmpty([]),
        IDENTIFY_FRAMES.out.stats.map { _meta, stats -> stats }.collect().ifEmpty([]),
        SPLIT_IDENTIFIED.out.stats.map { _meta, stats -> stats }.collect().ifEmpty([]),
        PLAN_CHUNKS.out.plan,
        ch_versions,
        groovy.json.JsonOutput.toJson(runParams()),
    )

    // What goes where in --outdir: [meta, [files or folders], [target folder of each]], one PUBLISH per task's
    // outputs, as soon as the task ends.
    ch_publish = PREFLIGHT.out.summary.concat(PLAN_CHUNKS.out.manifest, PLAN_CHUNKS.out.plan).collect()
        .map { files -> [[id: 'plan'], files, ['pipeline_info'] * files.size()] }
        .mix(
            IDENTIFY_FRAMES.out.stats.map { _meta, stats -> stats }.collect()
                .map { files -> [[id: 'identify'], files, ['pipeline_info/identify'] * files.size()] },
            SPLIT_IDENTIFIED.out.chunks.join(SPLIT_IDENTIFIED.out.stats).join(SPLIT_IDENTIFIED.out.identified, remainder: true)
                .map { meta, chunks, stats, identified ->
                    identified ? [[id: "split_${meta.id}"], [chunks, stats, identified], ['chunks', 'pipeline_info/split', 'identified']]
                        : [[id: "split_${meta.id}"], [chunks, stats], ['chunks', 'pipeline_info/split']]
                },
            EMBED_DNA.out.dnabert.join(EMBED_DNA.out.stats)
                .map { meta, folder, stats -> [[id: "dnabert_${meta.id}"], [folder, stats], ['dnabert', 'pipeline_info/embed_dna']] },
            EMBED_PROTEINS.out.esm.join(EMBED_PROTEINS.out.stats)
                .map { meta, folder, stats -> [[id: "esm_${meta.id}"], [folder, stats], ['esm', 'pipeline_info/embed']] },
            MERGE_FEATURES.out.merged.join(MERGE_FEATURES.out.stats)
                .map { meta, folder, stats -> [[id: "merged_${meta.id}"], [folder, stats], ['data_merge', 'pipeline_info/merge']] },
            REPORT.out.report.concat(REPORT.out.validation, REPORT.out.versions).collect()
                .map { files -> [[id: 'report'], files, ['.', 'pipeline_info', 'pipeline_info']] },
        )
    PUBLISH(ch_publish, outdir)
    FINALISE_OUTDIR(PUBLISH.out.published.collect(), outdir)

    // The report is published either way; a failed validation then fails the run.
    FINALISE_OUTDIR.out.removed
        .combine(REPORT.out.validation)
        .map { removed, validation ->
            def count = removed.readLines().size()
            if (count) {
                log.info("virnucpro-extract: removed ${count} file(s) of an earlier run from ${outdir} (listed in pipeline_info/removed_files.txt)")
            }
            def result = new groovy.json.JsonSlurper().parse(validation)
            if (!result.passed) {
                error("VALIDATE_OUTPUTS: ${result.checks_failed} of ${result.checks_run} checks failed; see ${outdir}/report.html")
            }
            return result
        }

    // Assigned here and emitted by name: `emit: x = ...` fails under Nextflow 25.04's strict parser
    // ("Missing workflow output parameter"); this form runs under both parsers.
    report = REPORT.out.report
    merged = MERGE_FEATURES.out.merged

    emit:
    report
    merged
}
