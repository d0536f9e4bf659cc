/*
 * What the Nextflow head does before and after the tasks: --help, parameter checks (unknown names, types,
 * ranges) before anything is submitted, the --outdir guard, the files PREFLIGHT stages, and the last
 * line of a run. Every problem is one contract line on stderr:
 *   error: <file>: <record or line>: <what is wrong> — <how to fix it>
 */

// Parameters that change what the pipeline computes: an --outdir written with other values of these is not
// silently mixed with this run's outputs (see checkOutdir). Batching and compile choices are not among them.
def resultParams() {
    ['input', 'data_dir', 'esm_model', 'dnabert_model', 'recompute_dnabert', 'precision', 'max_length', 'fast_forward',
     'fused_kernels', 'trust_remote_code', 'balance_hosts', 'seed', 'allow_missing', 'read_length', 'sequences_per_file',
     'keep_partial_files']
}

// Params set by nextflow.config or profiles for the pipeline's own use, not documented for users.
def internalParams() {
    ['help', 'trace_report_suffix', 'test_data']
}

// Params that institutional configs (nf-core/configs) commonly set: warned about by name, never an error.
def institutionalParams() {
    ['config_profile_name', 'config_profile_description', 'config_profile_contact', 'config_profile_url',
     'custom_config_version', 'custom_config_base', 'max_memory', 'max_cpus', 'max_time', 'igenomes_base']
}

def schemaProperties(schemaPath) {
    def schema = new groovy.json.JsonSlurper().parse(new File(schemaPath.toString()))
    def groups = schema['$defs'] ?: schema['definitions'] ?: [:]
    def properties = [:]
    groups.each { _name, group -> properties.putAll(group.properties ?: [:]) }
    properties.putAll(schema.properties ?: [:])
    return properties
}

def contractLine(file, where, problem, fix) {
    "error: ${file}: ${where}: ${problem} — ${fix}"
}

// camelCase (Nextflow turns --data-dir into dataDir) and kebab-case to the schema's snake_case.
def snakeCase(name) {
    name.replaceAll(/([a-z0-9])([A-Z])/, '$1_$2').replace('-', '_').toLowerCase()
}

// Optimal string alignment distance: a transposition (lenght/length) counts as one edit.
def editDistance(a, b) {
    def d = (0..a.size()).collect { i -> (0..b.size()).collect { j -> i == 0 ? j : (j == 0 ? i : 0) } }
    (1..a.size()).each { i ->
        (1..b.size()).each { j ->
            def cost = a[i - 1] == b[j - 1] ? 0 : 1
            d[i][j] = [d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost].min()
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1]) {
                d[i][j] = [d[i][j], d[i - 2][j - 2] + 1].min()
            }
        }
    }
    return d[a.size()][b.size()]
}

// The spelling the user typed (--data-dir or --dataDir), found on the command line; else the key itself.
def typedName(key, commandLine) {
    def tokens = (commandLine ?: '').tokenize(' ').findAll { token -> token.startsWith('--') }
        .collect { token -> token.substring(2).tokenize('=')[0] }
    tokens.find { token -> token == key || token.replace('-', '_').replaceAll(/_([a-z])/) { _all, c -> c.toUpperCase() } == key } ?: key
}

/*
 * Unknown parameter names: a near miss of a known one (case, '-' for '_', camelCase, a small edit distance)
 * is an error naming the parameter meant; any other unknown name is a warning (institutional configs pass
 * their own params, as nf-core allows). Returns [error lines, warning lines].
 */
def unknownParamProblems(given, known, commandLine) {
    def errors = []
    def warnings = []
    def keys = given.keySet() as List
    keys.findAll { key -> !(key in known) }.each { key ->
        def snake = snakeCase(key)
        // Nextflow stores --foo-bar as fooBar; a config's foo_bar stays as written
        def meant = snake in known ? snake : null
        if (meant == null && snake.size() >= 4) {
            def close = known.findAll { name -> name.size() >= 4 }
                .collect { name -> [name, editDistance(snake, name)] }
                .findAll { pair -> pair[1] <= (snake.size() >= 8 ? 2 : 1) }
                .sort { pair -> pair[1] }
            meant = close ? close[0][0] : null
        }
        def name = typedName(key, commandLine)
        if (meant != null) {
            errors << contractLine('params', "--${name}", 'unknown parameter', "did you mean --${meant}?")
        }
        else if (!(key in institutionalParams())) {
            warnings << "--${name} is not a parameter of this pipeline (ignored); see --help"
        }
        else {
            warnings << "--${name} (an institutional config's parameter) is not used by this pipeline"
        }
    }
    return [errors, warnings]
}

/*
 * Types, enums and ranges of the schema, checked in the head so that a wrong value stops the run before
 * any task is submitted (PREFLIGHT checks the same again with jsonschema, for the CLI used on its own).
 */
def paramValueProblems(given, properties) {
    def problems = []
    properties.each { name, spec ->
        def value = given[name]
        if (value == null) {
            return
        }
        def type = spec.type
        def ok = type == 'string' ? (value instanceof CharSequence || value instanceof Number)
            : type == 'integer' ? (value instanceof Integer || value instanceof Long || value instanceof BigInteger)
            : type == 'number' ? value instanceof Number
            : type == 'boolean' ? value instanceof Boolean
            : true
        // worded as jsonschema words them, so the head and PREFLIGHT say the same
        def shown = value.inspect()
        if (!ok) {
            problems << contractLine('params', "--${name}", "invalid value ${shown} (${shown} is not of type '${type}')",
                "give --${name} as ${type}")
            return
        }
        if (spec['enum'] && !(value.toString() in spec['enum'].collect { v -> v.toString() })) {
            def choices = spec['enum'].collect { v -> v.inspect() }.join(', ')
            problems << contractLine('params', "--${name}", "invalid value ${shown} (${shown} is not one of [${choices}])",
                "use one of ${spec['enum'].join(', ')}")
        }
        if (value instanceof Number && spec.containsKey('minimum') && value < spec.minimum) {
            problems << contractLine('params', "--${name}", "invalid value ${shown} (${shown} is less than the minimum of ${spec.minimum})",
                "give --${name} at least ${spec.minimum}" + (spec.containsKey('maximum') ? " and at most ${spec.maximum}" : ''))
        }
        if (value instanceof Number && spec.containsKey('maximum') && value > spec.maximum) {
            problems << contractLine('params', "--${name}", "invalid value ${shown} (${shown} is greater than the maximum of ${spec.maximum})",
                "give --${name}" + (spec.containsKey('minimum') ? " at least ${spec.minimum} and" : '') + " at most ${spec.maximum}")
        }
    }
    def hasInput = params.input as boolean
    def hasDataDir = params.data_dir as boolean
    if (hasInput == hasDataDir && !(params.test_data && !hasInput)) {
        problems << contractLine('params', '--input/--data_dir', hasInput ? 'both given' : 'neither given',
            'give exactly one of --input <samplesheet.csv> or --data_dir <VirNucPro data/>')
    }
    return problems
}

/*
 * The path itself, or its nearest parent that exists (an --outdir not made yet lands on its parent's file system).
 * Strict syntax has no `while`; a path has few parents, so they are listed and the deepest existing one taken.
 */
def nearestExisting(path) {
    def absolute = java.nio.file.Paths.get(path.toString()).toAbsolutePath().normalize()
    def candidates = (0..<absolute.nameCount).collect { depth -> absolute.root.resolve(absolute.subpath(0, depth + 1)) }
    candidates = [absolute.root] + candidates
    return candidates.reverse().find { candidate -> java.nio.file.Files.exists(candidate) }
}

/*
 * Hard links (the atomic default publish mode) cannot cross file systems: said here, before any work.
 */
def publishModeProblems(outdir, workDir) {
    if (params.publish_dir_mode != 'link') {
        return []
    }
    def target = nearestExisting(outdir)
    def work = nearestExisting(workDir)
    if (target == null || work == null) {
        return []
    }
    if (java.nio.file.Files.getFileStore(target) == java.nio.file.Files.getFileStore(work)) {
        return []
    }
    return [contractLine(outdir, '--publish_dir_mode link',
        "outdir (${target}) is on another file system than the work directory (${work}), so outputs cannot be published as hard links",
        'pass --publish_dir_mode copy, or put -work-dir on the file system of --outdir')]
}

/*
 * An --outdir holding another run's outputs (its pipeline_info/params.json differs in a parameter that changes
 * the results) is refused unless --replace_outdir: this run would otherwise leave that run's files beside its
 * own, looking current. With --replace_outdir the earlier files this run does not make are removed at its end.
 */
def outdirProblems(outdir) {
    def recorded = new File("${outdir}/pipeline_info/params.json")
    if (!recorded.isFile() || params.replace_outdir) {
        return []
    }
    def earlier
    try {
        earlier = new groovy.json.JsonSlurper().parse(recorded)
    }
    catch (Exception _unreadable) {
        return []
    }
    def now = runParams()
    def differing = resultParams().findAll { name -> earlier.containsKey(name) && earlier[name]?.toString() != now[name]?.toString() }
    if (!differing) {
        return []
    }
    def first = differing[0]
    def others = differing.size() > 1 ? " (and ${differing.drop(1).collect { n -> '--' + n }.join(', ')})" : ''
    return [contractLine(recorded, "--${first}",
        "this --outdir holds the outputs of a run with --${first} ${earlier[first]}, this run has ${now[first]}${others}",
        'give a new --outdir, or pass --replace_outdir to replace them (earlier outputs this run does not make are removed at its end)')]
}

// The params of this run as published in pipeline_info/params.json: paths made absolute, internal ones left out.
def runParams() {
    def values = params.findAll { k, _v -> !(k in ['help', 'trace_report_suffix']) }
    ['input', 'data_dir', 'outdir', 'esm_model', 'dnabert_model'].each { name ->
        if (values[name] instanceof CharSequence && file(values[name]).exists()) {
            values[name] = file(values[name]).toString()
        }
    }
    return values.sort()
}

// Written by the head (atomically) once the checks pass: the record outdirProblems reads next time.
def recordRunParams(outdir) {
    def info = java.nio.file.Paths.get(outdir.toString(), 'pipeline_info')
    java.nio.file.Files.createDirectories(info)
    def tmp = info.resolve('.params.json.partial')
    tmp.toFile().text = groovy.json.JsonOutput.prettyPrint(groovy.json.JsonOutput.toJson(runParams())) + '\n'
    java.nio.file.Files.move(tmp, info.resolve('params.json'), java.nio.file.StandardCopyOption.REPLACE_EXISTING,
        java.nio.file.StandardCopyOption.ATOMIC_MOVE)
}

def reportAndStop(problems) {
    problems.each { line -> System.err.println(line) }
    error("virnucpro-extract: ${problems.size()} problem(s) with the parameters, listed above; nothing was run")
}

/*
 * Every input file named by --data_dir or --input, for PREFLIGHT to stage (and -resume to key on): pairs of
 * [file, the path a user knows it by]. No validation here: PREFLIGHT reports whatever is wrong.
 */
def inputFiles() {
    if (params.data_dir) {
        def dir = file(params.data_dir)
        if (!dir.isDirectory()) {
            return []
        }
        def patterns = ['*.identified_{protein,nucleotide}/output_*',                       // chunks
                        '*.identified_{protein,nucleotide}.fa',                            // unsplit identified FASTA
                        '*.genomic.{gbff,fna}', '*.genomic.{gbff,fna}.gz']                 // RefSeq genomes
        return patterns.collectMany { pattern -> files("${params.data_dir}/${pattern}", type: 'file') }
            .collect { f -> [f, f.toAbsolutePath().normalize().toString()] }
            .unique { pair -> pair[1] }
    }
    def sheet = file(params.input)
    if (!sheet.isFile()) {
        return []
    }
    def listed = [[sheet, sheet.toAbsolutePath().normalize().toString()]]
    try {
        sheet.splitCsv(header: true).each { row ->
            ['protein_fasta', 'dnabert_embeddings', 'nucleotide_fasta', 'genome_fasta', 'genbank', 'identified_protein',
             'identified_nucleotide'].each { column ->
                def value = row[column]?.trim()
                if (value) {
                    def path = (value.startsWith('/') ? file(value) : sheet.parent.resolve(value)).toAbsolutePath().normalize()
                    if (path.isFile()) {
                        listed << [path, path.toString()]
                    }
                }
            }
        }
    }
    catch (Exception _malformed) {
        // a sheet that is not CSV: PREFLIGHT names the line and the fix
    }
    return listed.unique { pair -> pair[1] }
}

// A local model directory to stage, or [] for a hub id (resolved from the Hugging Face cache by the tasks).
def localModel(model) {
    def path = file(model)
    return path.exists() ? path : []
}

/*
 * The head's checks, in order, before any task is submitted; then the run's params are recorded in
 * --outdir. Returns what the workflow takes: the input files to stage and the local model directories.
 */
def initialisePipeline() {
    def schemaPath = "${projectDir}/nextflow_schema.json"
    def properties = schemaProperties(schemaPath)
    def known = properties.keySet() + internalParams()
    def unknown = unknownParamProblems(params, known, workflow.commandLine)
    unknown[1].each { line -> log.warn(line) }
    def problems = unknown[0] + paramValueProblems(params, properties)
    if (unknown[0].any { line -> line.contains('did you mean --input?') || line.contains('did you mean --data_dir?') }) {
        // the typo already says which one was meant
        problems = problems.findAll { line -> !line.contains('--input/--data_dir: neither given') }
    }
    if (!problems && params.outdir) {
        problems += publishModeProblems(params.outdir, workflow.workDir)
        problems += outdirProblems(params.outdir)
    }
    if (problems) {
        reportAndStop(problems)
    }
    recordRunParams(params.outdir)
    def makeTestInputs = params.test_data && !params.input && !params.data_dir
    return [inputs: makeTestInputs ? [] : inputFiles(), esm_model: localModel(params.esm_model),
            dnabert_model: localModel(params.dnabert_model), make_test_inputs: makeTestInputs,
            source: makeTestInputs ? 'test data' : file(params.data_dir ?: params.input).name]
}

/*
 * The run's last line: where the outputs are, that validation failed, or that the user stopped it and
 * -resume continues (instead of a task's exit 130 and Nextflow's failure dump).
 */
def completionMessage(run, outdir) {
    if (run.success) {
        return "virnucpro-extract: done; features in ${outdir}/data_merge, report in ${outdir}/report.html"
    }
    if (run.errorMessage in ['SIGINT', 'SIGTERM'] || run.exitStatus == 130) {
        return "virnucpro-extract: stopped (${run.errorMessage ?: 'interrupted'}); finished tasks are kept — run the same command with -resume to continue"
    }
    return null
}

/*
 * --help, generated from nextflow_schema.json so the two never disagree; columns as wide as the longest name
 * and type, so every row lines up.
 */
/*
 * What --help shows as a parameter's type: its choices where the schema lists them.
 */
def helpType(spec) {
    return spec['enum'] ? spec['enum'].join('|') : spec.type
}

def helpMessage(schemaPath, manifest) {
    def schema = new groovy.json.JsonSlurper().parse(new File(schemaPath.toString()))
    def groups = schema['$defs'] ?: schema['definitions'] ?: [:]
    def rows = groups.collectMany { _key, group -> group.properties.collect { name, spec -> [name, helpType(spec)] } }
    def nameWidth = rows.collect { row -> row[0].size() }.max() + 2
    def typeWidth = rows.collect { row -> row[1].size() }.max()
    def lines = [
        "${manifest.name} ${manifest.version}: ${manifest.description}",
        "",
        "Usage:",
        "  nextflow run main.nf -profile docker --data_dir /path/to/data --outdir results -resume",
        "  nextflow run main.nf -profile slurm,singularity --input samplesheet.csv --esm_model /models/FastESM2_650",
        "",
    ]
    groups.each { _key, group ->
        lines << "${group.title}:"
        if (group.description) {
            lines << "  ${group.description}"
        }
        group.properties.each { name, spec ->
            def dflt = spec.containsKey('default') ? " [default: ${spec.default}]" : ''
            lines << "  ${('--' + name).padRight(nameWidth)} ${helpType(spec).padRight(typeWidth)}  ${spec.description}${dflt}"
        }
        lines << ""
    }
    lines << "Profiles: docker, podman, singularity, slurm, test (combine with commas, e.g. -profile test,docker)."
    return lines.join("\n")
}
