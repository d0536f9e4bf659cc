/*
 * PREFLIGHT -> EMBED_PROTEINS (+ EMBED_DNA for chunks without DNABERT-S files) -> MERGE_FEATURES -> VALIDATE_OUTPUTS
 */
include { PREFLIGHT        } from '../modules/local/preflight'
include { EMBED_PROTEINS   } from '../modules/local/embed_proteins'
include { EMBED_DNA        } from '../modules/local/embed_dna'
include { MERGE_FEATURES   } from '../modules/local/merge_features'
include { VALIDATE_OUTPUTS } from '../modules/local/validate_outputs'

/*
 * Every input file named by --data_dir or --input, so that PREFLIGHT stages them: -resume then
 * re-checks inputs whose content changed, and container engines mount them. No validation here:
 * PREFLIGHT reports whatever is wrong, including files listed here that turn out to be bad.
 */
def inputFiles() {
    if (params.data_dir && params.input) {
        return []
    }
    if (params.data_dir) {
        return files("${params.data_dir}/*.identified_{protein,nucleotide}/output_*", type: 'file')
    }
    if (params.input && file(params.input).isFile()) {
        def sheet = file(params.input)
        def listed = []
        try {
            sheet.splitCsv(header: true).each { row ->
                ['protein_fasta', 'dnabert_embeddings', 'nucleotide_fasta'].each { column ->
                    def value = row[column]?.trim()
                    if (value) {
                        def path = value.startsWith('/') ? file(value) : sheet.parent.resolve(value)
                        if (path.isFile()) {
                            listed << path
                        }
                    }
                }
            }
        }
        catch (Exception _malformed) {
            // a sheet that is not CSV: PREFLIGHT names the line and the fix
            return [sheet]
        }
        return [sheet] + listed
    }
    return []
}

/* The model directory to stage (local models), or [] for hub ids resolved from the HF cache. */
def localModel() {
    def model = file(params.esm_model)
    return model.exists() ? model : []
}

/* The DNABERT-S model directory to stage (local models), or [] for hub ids resolved from the HF cache. */
def localDnaModel() {
    def model = file(params.dnabert_model)
    return model.exists() ? model : []
}

/*
 * The params that tasks see: paths typed relative to the launch directory made absolute, since
 * tasks run in their own work directories (hub ids stay as they are).
 */
def taskParams() {
    // help and the trace suffix (a timestamp) would change every run and defeat -resume of PREFLIGHT
    def resolved = params.findAll { k, _v -> !(k in ['help', 'trace_report_suffix']) }
    ['input', 'data_dir', 'outdir'].each { name ->
        if (params[name] instanceof CharSequence) {
            resolved[name] = file(params[name]).toString()
        }
    }
    if (localModel()) {
        resolved.esm_model = localModel().toString()
    }
    if (localDnaModel()) {
        resolved.dnabert_model = localDnaModel().toString()
    }
    return resolved
}

def shellQuote(text) {
    "'" + text.replace("'", "'\\''") + "'"
}

def chunkKey(esm) {
    "${esm.parent.name}/${esm.name - '_ESM.pt'}"
}

def dnaChunkKey(dnabert) {
    "${dnabert.parent.name}/${dnabert.name - '_DNABERT_S.pt'}"
}

workflow VIRNUCPRO_EXTRACT {
    main:
    // One line, single-quoted for the shell: modules write it with `echo` (multi-line heredocs break indentation).
    def paramsJson = shellQuote(groovy.json.JsonOutput.toJson(taskParams()))

    PREFLIGHT(
        paramsJson,
        file("${projectDir}/nextflow_schema.json"),
        inputFiles(),
        [localModel(), localDnaModel()].flatten(),
        workflow.launchDir.toString(),   // a string: as a Path its changing mtime would defeat -resume
    )

    ch_chunks = PREFLIGHT.out.manifest
        .splitCsv(header: true)
        .map { row ->
            def meta = [key: row.key, id: row.id, group: row.group, label: row.label, task_group: row.task_group as int,
                        compute_dnabert: row.compute_dnabert == 'true']
            // Chunks marked compute_dnabert carry their nucleotide FASTA here until EMBED_DNA replaces it.
            [meta, file(row.protein_fasta), file(meta.compute_dnabert ? row.nucleotide_fasta : row.dnabert_embeddings)]
        }
        .branch { meta, _fasta, _dna ->
            compute: meta.compute_dnabert
            given: true
        }

    ch_model_key = PREFLIGHT.out.summary.map { json -> new groovy.json.JsonSlurper().parse(json).model_fingerprint }
    ch_dna_model_key = PREFLIGHT.out.summary.map { json -> new groovy.json.JsonSlurper().parse(json).dnabert_model_fingerprint }

    // DNABERT-S for chunks that have reads but no (or, with --recompute_dnabert, a stale) DNABERT-S file.
    ch_dna_in = ch_chunks.compute
        .map { meta, _fasta, reads -> [meta.task_group, meta, reads] }
        .groupTuple()
        .map { group, metas, reads ->
            def pairs = [metas, reads].transpose().sort { pair -> pair[0].key }
            [[id: "embed_dna_${group}", keys: pairs.collect { pair -> pair[0].key }], pairs.collect { pair -> pair[1] }]
        }

    EMBED_DNA(ch_dna_in, localDnaModel(), ch_dna_model_key)

    ch_dna_computed = EMBED_DNA.out.dnabert
        .flatten()
        .map { dnabert -> [dnaChunkKey(dnabert), dnabert] }

    // Every chunk with its DNABERT-S file: given, or computed above.
    ch_chunks_dna = ch_chunks.given
        .mix(
            ch_chunks.compute
                .map { meta, fasta, _reads -> [meta.key, meta, fasta] }
                .join(ch_dna_computed, failOnMismatch: true, failOnDuplicate: true)
                .map { _key, meta, fasta, dnabert -> [meta, fasta, dnabert] }
        )

    // EMBED_PROTEINS starts once every EMBED_DNA task has ended: each sizes its batches from the card's
    // free memory, and two on one card would both claim it. DNABERT-S is the short step (about 25,000
    // reads/s on an H100), so the wait costs little, also under Slurm where each job has its own card.
    ch_dna_done = EMBED_DNA.out.stats.collect().ifEmpty([]).map { _stats -> true }

    // Several chunk files per task: one model load, many chunks (grouping chosen by PREFLIGHT).
    ch_embed_in = ch_chunks.given.mix(ch_chunks.compute)
        .map { meta, fasta, _dna -> [meta.task_group, meta, fasta] }
        .groupTuple()
        .map { group, metas, fastas ->
            def pairs = [metas, fastas].transpose().sort { pair -> pair[0].key }
            [[id: "embed_${group}", keys: pairs.collect { pair -> pair[0].key }], pairs.collect { pair -> pair[1] }]
        }
        .combine(ch_dna_done)
        .map { meta, fastas, _done -> [meta, fastas] }

    EMBED_PROTEINS(ch_embed_in, localModel(), ch_model_key)

    ch_esm = EMBED_PROTEINS.out.esm
        .flatten()
        .map { esm -> [chunkKey(esm), esm] }

    ch_merge_in = ch_chunks_dna
        .map { meta, _fasta, dna -> [meta.key, meta, dna] }
        .join(ch_esm, failOnMismatch: true, failOnDuplicate: true)
        .map { _key, meta, dna, esm -> [meta, esm, dna] }

    MERGE_FEATURES(ch_merge_in)

    ch_validate_in = ch_chunks_dna
        .map { meta, fasta, dna -> [meta.key, meta, fasta, dna] }
        .join(ch_merge_in.map { meta, esm, _dna -> [meta.key, esm] }, failOnMismatch: true)
        .join(MERGE_FEATURES.out.merged.map { meta, merged -> [meta.key, merged] }, failOnMismatch: true)
        .toSortedList { a, b -> a[0] <=> b[0] }
        .map { rows -> rows.collect { row -> row[1..-1] }.transpose() }

    VALIDATE_OUTPUTS(
        ch_validate_in,
        PREFLIGHT.out.summary,
        EMBED_PROTEINS.out.stats.collect(),
        MERGE_FEATURES.out.stats.collect(),
        EMBED_DNA.out.stats.collect().ifEmpty([]),
        paramsJson,
    )

    // The report is published either way; a failed validation then fails the run.
    VALIDATE_OUTPUTS.out.validation.map { json ->
        def result = new groovy.json.JsonSlurper().parse(json)
        if (!result.passed) {
            error("VALIDATE_OUTPUTS: ${result.checks_failed} of ${result.checks_run} checks failed; see ${params.outdir}/report.html")
        }
    }

    VALIDATE_OUTPUTS.out.report.subscribe { _report ->
        log.info "virnucpro-extract: features in ${params.outdir}/data_merge, report in ${params.outdir}/report.html"
    }
}
