/*
 * One prefix's identified FASTA (the shards of its genome FASTA in order, or the unsplit pair a user gave) cut
 * into chunk files of --sequences_per_file records, as VirNucPro's split_fasta_file cuts them. For a prefix made
 * from genomes it also writes the identified pair whole (identified/) and fails, naming the genome FASTA, if no
 * frame at all was kept.
 */
process SPLIT_IDENTIFIED {
    tag "${meta.id}"
    label 'process_single'

    input:
    tuple val(meta), path(proteins, stageAs: 'protein/?/*'), path(nucleotides, stageAs: 'nucleotide/?/*')

    output:
    tuple val(meta), path('chunks')         , emit: chunks
    tuple val(meta), path('identified')     , emit: identified, optional: true
    tuple val(meta), path('*.split.json')   , emit: stats
    tuple val("${task.process}"), val('virnucpro-extract'), eval('virnucpro-extract --version | sed "s/.* //"'), topic: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def args = task.ext.args ?: ''
    def genome = meta.stage == 'genomes' ? "--identified_outdir identified --genome '${meta.genome}'" : ''
    """
    virnucpro-extract split \\
        --prefix ${meta.prefix} \\
        ${repeatOption('--protein', proteins)} \\
        ${repeatOption('--nucleotide', nucleotides)} \\
        --outdir chunks \\
        ${genome} \\
        --stats ${meta.id}.split.json \\
        ${args}
    """

    stub:
    """
    mkdir -p chunks/${meta.prefix}.identified_protein chunks/${meta.prefix}.identified_nucleotide
    touch chunks/${meta.prefix}.identified_protein/output_1.fa chunks/${meta.prefix}.identified_nucleotide/output_1.fa
    echo '{"prefix": "${meta.prefix}", "chunks": [{"id": "output_1", "proteins": 0, "truncated": 0, "max_residues": 0, "full": true}]}' > ${meta.id}.split.json
    """
}

/*
 * One `--option file` pair per staged file: a path input is a single path for one file and a list for several.
 */
def repeatOption(option, files) {
    return (files instanceof List ? files : [files]).collect { f -> "${option} ${f}" }.join(' ')
}
