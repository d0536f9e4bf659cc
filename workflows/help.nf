/*
 * --help, generated from nextflow_schema.json so the two never disagree.
 */
def helpMessage(String schemaPath, manifest) {
    def schema = new groovy.json.JsonSlurper().parse(new File(schemaPath))
    def lines = [
        "${manifest.name} ${manifest.version}: ${manifest.description}",
        "",
        "Usage:",
        "  nextflow run main.nf -profile docker --data_dir /path/to/data --outdir results -resume",
        "  nextflow run main.nf -profile slurm,singularity --input samplesheet.csv --esm_model /models/FastESM2_650",
        "",
    ]
    schema.definitions.each { _key, group ->
        lines << "${group.title}:"
        if (group.description) {
            lines << "  ${group.description}"
        }
        group.properties.each { name, spec ->
            def type = spec['enum'] ? spec['enum'].join('|') : spec.type
            def dflt = spec.containsKey('default') ? " [default: ${spec.default}]" : ''
            lines << "  --${name.padRight(18)} ${type.padRight(10)} ${spec.description}${dflt}"
        }
        lines << ""
    }
    lines << "Profiles: docker, singularity, slurm, test (combine with commas, e.g. -profile test,docker)."
    return lines.join("\n")
}
